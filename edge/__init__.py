"""The service on the device: camera, inference loop, model store and hot swap, REST API, MQTT.

`edge.runtime` starts and stops the parts; `edge.manager` owns model changes; `edge.app` is the
Flask app over `edge.api`'s blueprints; `edge.events` publishes over MQTT. Contracts shared
with the laptop side come from `core` (docs/).
"""
