"""A Lambda whose import returns: work happens in its handler, one call per event.

It also starts a non-daemon thread at import, as the samples' display thread is, which must
not keep `run-lambda` alive after SIGTERM. Each call appends the shims' settings to $LAMBDA_TEST_OUT.
"""
import json
import os
import threading
import time

threading.Thread(target=time.sleep, args=(3600,)).start()
KEYS = ("DEEPLENS_CAMERA", "DEEPLENS_FRAME_SIZE", "DEEPLENS_ARTIFACTS", "DEEPLENS_BROKER", "AWS_IOT_THING_NAME")


def function_handler(event, context):
    with open(os.environ["LAMBDA_TEST_OUT"], "a") as out:
        out.write(json.dumps({"event": event, "context": context, **{k: os.environ.get(k) for k in KEYS}}) + "\n")
