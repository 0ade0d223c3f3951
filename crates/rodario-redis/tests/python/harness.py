"""The Python rodario library (1.0.0a7), set up for rodario's interoperability tests.

Two test-only patches; the library's logic is otherwise unchanged:

1. Every connection goes to 127.0.0.1 on the port in RODARIO_PY_REDIS_PORT (the library
   always connects to localhost:6379).
2. A proxy's reply queue is registered before its call is published. The library registers
   it after publishing, so a reply that arrives first raises KeyError in the proxy's reader
   thread, the thread dies and every later call on that proxy hangs. A ClusterProxy learns
   its count only from the publish, so replies that arrive before it are held, then
   delivered as the library would have.

Import this module before anything from `rodario` (that applies the first patch), then
call `patch_reply_ordering()` (the second).
"""
import functools
import os
import pickle
import threading
from multiprocessing import Queue
from uuid import uuid4

import redis

redis.StrictRedis = functools.partial(
    redis.StrictRedis, host="127.0.0.1", port=int(os.environ["RODARIO_PY_REDIS_PORT"])
)

from rodario.actors import proxy as _proxy_module  # noqa: E402
from rodario.actors import clusterproxy as _cluster_module  # noqa: E402
from rodario.exceptions import EmptyClusterException, InvalidActorException  # noqa: E402
from rodario.future import Future  # noqa: E402


def _actor_call(self, method_name, *args, **kwargs):
    uuid = str(uuid4())
    queue = Queue()
    self._response_queues[uuid] = queue
    count = self._redis.publish(
        "actor:%s" % self.uuid,
        pickle.dumps((uuid, self.proxyid, method_name, args, kwargs)),
    )
    if count == 0:
        self._response_queues.pop(uuid, None)
        raise InvalidActorException("No such actor")
    if method_name in self._blocking_methods:
        return queue.get()
    return Future(queue)


_cluster_lock = threading.Lock()


def _cluster_deliver(self, data):
    # The library's ClusterProxy._handler, unchanged.
    if data[1] != False:  # noqa: E712
        queue = self._response_queues[data[0]]
        queue.put(data[1])
        self._response_queues[data[0]] = queue
    self._response_counters[data[0]] -= 1
    if self._response_counters[data[0]] <= 0:
        self._response_queues.pop(data[0])


def _cluster_handler(self, message):
    data = pickle.loads(message["data"])
    with _cluster_lock:
        if data[0] not in self._response_counters:
            self.__dict__.setdefault("_early", {}).setdefault(data[0], []).append(data)
            return
        _cluster_deliver(self, data)


def _cluster_call(self, method_name, *args, **kwargs):
    uuid = str(uuid4())
    count = self._redis.publish(
        "cluster:%s" % self.channel,
        pickle.dumps((uuid, self.proxyid, method_name, args, kwargs)),
    )
    if count == 0:
        raise EmptyClusterException()
    queue = Queue()
    queue.put(count)
    with _cluster_lock:
        self._response_queues[uuid] = queue
        self._response_counters[uuid] = count
        for data in self.__dict__.get("_early", {}).pop(uuid, []):
            _cluster_deliver(self, data)
    return Future(queue)


def patch_reply_ordering():
    """Registers each call's reply queue before the call is published."""
    _proxy_module.ActorProxy._proxy = _actor_call
    _cluster_module.ClusterProxy._handler = _cluster_handler
    _cluster_module.ClusterProxy._proxy = _cluster_call
