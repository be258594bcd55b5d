// Line charts drawn on a <canvas> (no library): axes, ticks, one line per series, a legend.

function niceStep(span, count) {
  const raw = span / Math.max(1, count);
  const magnitude = 10 ** Math.floor(Math.log10(raw || 1));
  const norm = raw / magnitude;
  return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
}

function label(value, step) {
  const digits = Math.max(0, -Math.floor(Math.log10(step || 1)));
  return value.toFixed(Math.min(4, digits));
}

/**
 * series: [{name, color, points: [[x, y], ...], dashed}]; options: {xLabel, yLabel, xMin, xMax,
 * yMin, yMax, empty}. The canvas keeps its CSS size; its backing store follows devicePixelRatio.
 */
export function lineChart(canvas, series, options = {}) {
  const dpr = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || Number(canvas.getAttribute('width')) || 480;
  const cssHeight = canvas.clientHeight || Number(canvas.getAttribute('height')) || 220;
  canvas.width = Math.round(cssWidth * dpr);
  canvas.height = Math.round(cssHeight * dpr);
  const c = canvas.getContext('2d');
  c.setTransform(dpr, 0, 0, dpr, 0, 0);
  c.clearRect(0, 0, cssWidth, cssHeight);
  c.font = '11px system-ui, sans-serif';
  const points = series.flatMap((s) => s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1])));
  canvas.dataset.points = String(points.length);
  const left = 48;
  const right = 12;
  const top = 12 + (series.length > 1 ? 16 : 0);
  const bottom = 34;
  const w = cssWidth - left - right;
  const hgt = cssHeight - top - bottom;
  c.strokeStyle = '#c9ced6';
  c.strokeRect(left, top, w, hgt);
  if (!points.length) {
    c.fillStyle = '#777';
    c.textAlign = 'center';
    c.fillText(options.empty || 'no data yet', left + w / 2, top + hgt / 2);
    return;
  }
  let xMin = options.xMin ?? Math.min(...points.map((p) => p[0]));
  let xMax = options.xMax ?? Math.max(...points.map((p) => p[0]));
  let yMin = options.yMin ?? Math.min(...points.map((p) => p[1]));
  let yMax = options.yMax ?? Math.max(...points.map((p) => p[1]));
  if (xMax === xMin) { xMax = xMin + 1; }
  if (yMax === yMin) { yMax = yMin + (Math.abs(yMin) || 1) * 0.1; yMin -= (Math.abs(yMin) || 1) * 0.1; }
  if (options.yMin === undefined) yMin = Math.min(yMin, Math.max(0, yMin - (yMax - yMin) * 0.05));
  const X = (x) => left + ((x - xMin) / (xMax - xMin)) * w;
  const Y = (y) => top + hgt - ((y - yMin) / (yMax - yMin)) * hgt;
  // grid and ticks
  c.fillStyle = '#555';
  c.strokeStyle = '#eceff3';
  c.lineWidth = 1;
  const ys = niceStep(yMax - yMin, 5);
  c.textAlign = 'right';
  c.textBaseline = 'middle';
  for (let y = Math.ceil(yMin / ys) * ys; y <= yMax + ys * 1e-6; y += ys) {
    c.beginPath(); c.moveTo(left, Y(y)); c.lineTo(left + w, Y(y)); c.stroke();
    c.fillText(label(y, ys), left - 6, Y(y));
  }
  const xs = Math.max(options.xInteger ? 1 : 0, niceStep(xMax - xMin, 6));
  c.textAlign = 'center';
  c.textBaseline = 'top';
  for (let x = Math.ceil(xMin / xs) * xs; x <= xMax + xs * 1e-6; x += xs) {
    c.beginPath(); c.moveTo(X(x), top); c.lineTo(X(x), top + hgt); c.stroke();
    c.fillText(label(x, xs), X(x), top + hgt + 4);
  }
  if (options.xLabel) c.fillText(options.xLabel, left + w / 2, top + hgt + 18);
  if (options.yLabel) {
    c.save();
    c.translate(11, top + hgt / 2);
    c.rotate(-Math.PI / 2);
    c.textBaseline = 'middle';
    c.fillText(options.yLabel, 0, 0);
    c.restore();
  }
  // lines
  c.save();
  c.beginPath();
  c.rect(left, top, w, hgt);
  c.clip();
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
    if (!pts.length) continue;
    c.strokeStyle = s.color;
    c.fillStyle = s.color;
    c.lineWidth = 2;
    c.setLineDash(s.dashed ? [5, 4] : []);
    c.beginPath();
    pts.forEach((p, i) => (i ? c.lineTo(X(p[0]), Y(p[1])) : c.moveTo(X(p[0]), Y(p[1]))));
    c.stroke();
    if (pts.length < 40) for (const p of pts) { c.beginPath(); c.arc(X(p[0]), Y(p[1]), 2.5, 0, Math.PI * 2); c.fill(); }
  }
  c.restore();
  // legend
  if (series.length > 1) {
    let x = left;
    c.textAlign = 'left';
    c.textBaseline = 'middle';
    for (const s of series) {
      c.fillStyle = s.color;
      c.fillRect(x, 4, 14, 4);
      c.fillStyle = '#333';
      c.fillText(s.name, x + 18, 6);
      x += 26 + c.measureText(s.name).width;
    }
  }
}
