#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace traffik {

// A minimal HTTP/1.x server for Prometheus scrapes: GET /metrics answers with
// `render()` as text/plain; version=0.0.4, anything else 404/405. One
// connection at a time on one thread, each closed after its answer, with a
// read timeout, so a slow client cannot pin it for long.
//
// Used instead of prometheus-cpp's civetweb Exposer, which adds its own
// series (one in microseconds, against Prometheus naming conventions) and is
// slow to stop.
//
// Thread-safe: `render` is called on the server's thread.
class HttpExposer {
 public:
  // Binds `address` ("host:port", "[v6]:port"; port 0 picks a free one) and
  // starts serving. Errors name the address and the reason.
  static absl::StatusOr<std::unique_ptr<HttpExposer>> Start(
      const std::string& address, std::function<std::string()> render);
  ~HttpExposer();  // stops and joins
  HttpExposer(const HttpExposer&) = delete;
  HttpExposer& operator=(const HttpExposer&) = delete;

  int port() const { return port_; }

 private:
  HttpExposer(int listen_fd, int wake_fd_read, int wake_fd_write, int port,
              std::function<std::string()> render);
  void Loop();
  void Serve(int fd);

  const int listen_fd_;
  const int wake_read_;
  const int wake_write_;
  const int port_;
  const std::function<std::string()> render_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace traffik
