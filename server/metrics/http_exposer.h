#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

struct bufferevent;
struct event;
struct event_base;
struct evhttp;
struct evhttp_connection;
struct evhttp_request;

namespace traffik {

// What the exposer answers to one request: pure routing of the request line's
// method and target, so it can be tested and fuzzed without a socket.
struct MetricsRoute {
  int status = 0;              // 200, 404 or 405
  const char* reason = "";     // "OK", "Not Found", "Method Not Allowed"
  bool serve_metrics = false;  // 200: the body is the rendered metrics
  bool head_only = false;      // HEAD: headers without the body
};

// Routes `method` (as sent: "GET", "HEAD", ...) and `target` (the request-target:
// "/metrics", "/metrics?x=1", "http://host/metrics", anything a client sends).
// GET or HEAD on path /metrics (any query) is 200; another method on /metrics
// is 405; every other target is 404. Never fails; any bytes are accepted.
MetricsRoute RouteMetricsRequest(std::string_view method, std::string_view target);

// Bounds on what one client can hold. The defaults suit a Prometheus scrape.
struct HttpExposerOptions {
  // The whole request head (line + headers) must arrive within this long of
  // the connection being accepted, however slowly the bytes trickle in.
  std::chrono::milliseconds head_timeout{5000};
  // The response must be written within this long of the request head.
  std::chrono::milliseconds write_timeout{10000};
  // Open connections. When a new connection arrives at the cap, the oldest
  // idle one (at least idle_grace old, its head incomplete and every byte it sent
  // already read: a half-open or trickling client) is closed to make room, so
  // half-open connections cannot lock a scrape out, even when they reconnect
  // as fast as they are closed. Younger connections (a client may not have
  // sent its head yet) are let in over the cap and the idle ones closed as
  // they age; at 2 * max_connections + 64 the oldest connection still waiting
  // for its head is closed at once.
  size_t max_connections = 64;
  // How long a new connection may stay silent before it counts as idle.
  std::chrono::milliseconds idle_grace{250};
  // Longest request line, and longest header block.
  size_t max_head_bytes = 8192;
};

// The Prometheus scrape endpoint on libevent's HTTP server (evhttp): GET
// /metrics answers with `render()` as text/plain; version=0.0.4, other paths
// 404, other methods on /metrics 405, each connection closed after its answer.
//
// Event-driven on one named thread ("metrics-http"), so a slow client never
// blocks another; every connection has a deadline (head, then write) and the
// number of connections is capped, see HttpExposerOptions.
//
// Used instead of prometheus-cpp's civetweb Exposer, which adds its own
// series (one in microseconds, against Prometheus naming conventions) and
// serves one thread per connection.
//
// Thread-safe: `render` is called on the exposer's thread; the destructor may
// run on any thread and never waits on a client.
class HttpExposer {
 public:
  // Binds `address` ("host:port", "[v6]:port"; port 0 picks a free one) and
  // starts serving. Errors name the address and the reason.
  static absl::StatusOr<std::unique_ptr<HttpExposer>> Start(
      const std::string& address, std::function<std::string()> render,
      const HttpExposerOptions& options = {});
  // Stops the loop, closes every connection without waiting for its client,
  // and joins the thread.
  ~HttpExposer();
  HttpExposer(const HttpExposer&) = delete;
  HttpExposer& operator=(const HttpExposer&) = delete;

  int port() const { return port_; }

 private:
  struct Connection;

  HttpExposer(int port, std::function<std::string()> render,
              const HttpExposerOptions& options);
  absl::Status Init(int listen_fd);

  // libevent callbacks (all on the exposer's thread).
  static bufferevent* NewConnection(event_base* base, void* self);
  static void OnClosed(evhttp_connection* evcon, void* connection);
  static void OnDeadline(int fd, short what, void* connection);
  static void OnRequest(evhttp_request* request, void* self);
  static void OnWake(int fd, short what, void* self);

  void Adopt(Connection* connection);
  size_t OpenCount() const;
  size_t HardCap() const;
  Connection* PickIdle() const;
  Connection* PickVictim() const;
  void Evict(Connection* connection);
  void Close(Connection* connection);
  void Forget(Connection* connection);

  const int port_;
  const std::function<std::string()> render_;
  const HttpExposerOptions options_;

  event_base* base_ = nullptr;
  evhttp* http_ = nullptr;
  event* wake_event_ = nullptr;
  int wake_read_ = -1;
  int wake_write_ = -1;

  // Owned by the exposer's thread (and by the destructor after the join).
  // Oldest first.
  std::list<Connection*> connections_;
  absl::flat_hash_map<bufferevent*, Connection*> by_bufferevent_;

  std::thread thread_;
};

}  // namespace traffik
