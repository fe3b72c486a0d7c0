# workerd for make bench: the Worker and the Durable Object room of
# worker.js, in-memory storage, no WebSocket compression. The socket is
# handed over by the harness: workerd serve workerd.capnp --socket-fd http=FD
using Workerd = import "/workerd/workerd.capnp";

const config :Workerd.Config = (
  services = [ (name = "main", worker = .worker) ],
  sockets = [ (name = "http", address = "127.0.0.1:0", http = (), service = "main") ],
);

const worker :Workerd.Worker = (
  modules = [ (name = "worker.js", esModule = embed "worker.js") ],
  compatibilityDate = "2025-01-01",
  compatibilityFlags = ["no_web_socket_compression"],
  durableObjectNamespaces = [ (className = "Room", uniqueKey = "wharf-bench-room") ],
  durableObjectStorage = (inMemory = void),
  bindings = [ (name = "ROOM", durableObjectNamespace = "Room") ],
);
