"""What rodario's interoperability tests ask of a Python rodario process.

    interop.py call UUID          a proxy calls a (Rust) actor; prints what it saw, as JSON
    interop.py cluster CHANNEL METHOD [N]
                                  a ClusterProxy calls METHOD([N]) on a channel; prints the replies
    interop.py serve UUID CHANNEL serves a Python actor that joins CHANNEL until stdin closes
    interop.py actors             prints the registry's actors
    interop.py unpatched UUID N   N calls with the library's own reply ordering; prints how
                                  many were answered

Every wait is bounded: a future's get has a timeout, and the whole run an alarm.
"""
import json
import os
import queue
import signal
import sys
import time

import harness  # (patches the library's connections first)
from rodario.actors import Actor, ActorProxy, ClusterProxy
from rodario.registry import Registry

TIMEOUT = 5


def describe(value):
    if isinstance(value, Exception):
        return {"exception": type(value).__name__, "message": str(value)}
    if isinstance(value, bytes):
        return {"bytes": list(value)}
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, (tuple, list)):
        return [describe(v) for v in value]
    if isinstance(value, dict):
        return {k: describe(v) for k, v in value.items()}
    return value


def call(uuid):
    proxy = ActorProxy(uuid=uuid)
    seen = {"methods": sorted(m for m in dir(proxy) if not m.startswith("_"))}
    seen["positional"] = describe(proxy.greet("Ann").get(timeout=TIMEOUT))
    seen["keyword"] = describe(proxy.greet(name="Bo", greeting="Howdy").get(timeout=TIMEOUT))
    seen["mixed"] = describe(proxy.add(2, b=40).get(timeout=TIMEOUT))
    seen["values"] = describe(proxy.echo([1, "two", 3.5, None, True, b"\x00\xff", {"k": [1]}]).get(timeout=TIMEOUT))
    slow = proxy.slow(400)
    seen["ready_at_once"] = slow.ready
    time.sleep(1.5)
    seen["ready_later"] = slow.ready
    seen["slow"] = describe(slow.get(timeout=TIMEOUT))
    seen["unknown"] = describe(proxy._proxy("nope").get(timeout=TIMEOUT))
    seen["bad_arguments"] = describe(proxy.add(1).get(timeout=TIMEOUT))
    seen["failing"] = describe(proxy.fail().get(timeout=TIMEOUT))
    return seen


def cluster(channel, method, *args):
    future = getattr(ClusterProxy(channel), method)(*(int(a) for a in args))
    count = future.get(timeout=TIMEOUT)
    values = []
    for _ in range(count):
        try:
            values.append(describe(future.get(timeout=2)))
        except queue.Empty:
            # A declining member is counted but yields nothing.
            break
    return {"count": count, "values": sorted(values, key=json.dumps)}


class PyEcho(Actor):
    """A Python actor for Rust proxies to call."""

    def echo(self, value):
        return value

    def add(self, a, b):
        return a + b

    def work(self, n):
        return ["python", n * 2]


def serve(uuid, channel):
    actor = PyEcho(uuid=uuid)
    actor.start()
    actor.join(channel)
    print("ready", flush=True)
    sys.stdin.read()
    actor.stop()
    Registry().unregister(uuid)
    return None


def actors():
    return sorted(a.decode() for a in Registry().actors)


def unpatched(uuid, n):
    """Calls until one is lost: the library registers a reply queue after publishing."""
    proxy = ActorProxy(uuid=uuid)
    answered = 0
    for i in range(n):
        try:
            proxy.greet("caller %d" % i).get(timeout=2)
        except queue.Empty:
            break
        answered += 1
    return {"calls": n, "answered": answered}


def main():
    signal.alarm(30)
    command, args = sys.argv[1], sys.argv[2:]
    if command == "unpatched":
        # The constructor's own `_get_methods` call can be lost too, and then it waits
        # forever: the alarm ends the run.
        signal.signal(signal.SIGALRM, lambda *_: (print(json.dumps({"calls": int(args[1]), "answered": 0, "constructor_hung": True}), flush=True), os._exit(0)))
        signal.alarm(3)
        print(json.dumps(unpatched(args[0], int(args[1]))), flush=True)
        return
    harness.patch_reply_ordering()
    if command == "call":
        result = call(*args)
    elif command == "cluster":
        result = cluster(*args)
    elif command == "serve":
        result = serve(*args)
    elif command == "actors":
        result = actors()
    else:
        raise SystemExit("unknown command %r" % command)
    if result is not None:
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
