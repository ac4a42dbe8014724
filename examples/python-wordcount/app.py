"""A wasi:messaging handler in Python, built with componentize-py from the standard WIT only.

For each message it publishes `{"topic": ..., "words": N}` (JSON) to `<topic>.counted`,
keeping the message's metadata. A payload that is not UTF-8 text is an error, which the
run driver reports and counts.
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import producer, types


class IncomingHandler(exports.IncomingHandler):
    def handle(self, message: types.Message) -> None:
        topic = message.topic() or "unknown"
        try:
            text = message.data().decode("utf-8")
        except UnicodeDecodeError:
            raise Err(types.Error_Other("payload is not UTF-8 text"))
        out = types.Message(json.dumps({"topic": topic, "words": len(text.split())}).encode())
        out.set_content_type("application/json")
        for key, value in message.metadata() or []:
            out.add_metadata(key, value)
        producer.send(types.Client.connect("default"), f"{topic}.counted", out)
