// Following a studio job (capture, deploy): GET /api/jobs/<id> until it is done or failed.
import { describe, enc, get } from './api.js';

/** Poll job `id` every `interval` ms, calling onUpdate(job) each time; resolves with the last job. */
export function followJob(id, onUpdate, interval = 500) {
  let stopped = false;
  let failures = 0;
  const promise = new Promise((resolve) => {
    const tick = async () => {
      if (stopped) return;
      try {
        const job = await get(`/api/jobs/${enc(id)}`);
        failures = 0;
        onUpdate(job);
        if (job.state === 'done' || job.state === 'failed') {
          resolve(job);
          return;
        }
      } catch (exc) {
        failures += 1;
        onUpdate(null, exc);
        if (exc.status === 404 || failures > 60) {
          resolve({ id, state: 'failed', error: describe(exc) });
          return;
        }
      }
      setTimeout(tick, interval);
    };
    tick();
  });
  promise.stop = () => { stopped = true; };
  return promise;
}

export const jobId = (answer) => (answer && typeof answer.job === 'object' && answer.job ? answer.job.id : answer && (answer.job ?? answer.id));

/** A job's error as one line (the error may be a string or {code, message}). */
export function jobError(job) {
  const error = job && job.error;
  if (!error) return 'failed';
  if (typeof error === 'string') return error;
  return error.message ? `${error.message}${error.code ? ` (${error.code})` : ''}` : JSON.stringify(error);
}
