#pragma once

#include <netinet/in.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "grpcpp/channel.h"

namespace traffik::bench {

// Where and how to open idle connections.
struct IdleConnectionOptions {
  // The server's IPv4 address and port (e.g. 127.0.0.1:50051).
  std::string target;
  // Connections to open, 1..kMaxIdleConnections.
  int connections = 10000;
  // Source addresses, used round robin (each connection binds one before
  // connecting, so each address has its own ephemeral port range). Empty: the
  // kernel picks (one address, one port range).
  std::vector<in_addr> sources;
  // Threads opening connections in parallel (each connects, then makes its
  // call, then the next): few enough not to overflow the listen backlog.
  int threads = 8;
  // Deadline of each call (the first and Verify's).
  std::chrono::milliseconds call_deadline{5000};
};

inline constexpr int kMaxIdleConnections = 1'000'000;

// N real HTTP/2 client connections, each a gRPC channel over its own TCP
// connection that completed one call (grpc.health.v1.Health/Check, which the
// server answers without touching any bucket) and then went quiet: what a
// fleet of idle clients looks like to the server. Each socket is created,
// bound and connected here, then handed to gRPC (CreateInsecureChannelFromFd),
// so the source address is ours to choose and a channel never reconnects on
// its own: a connection the server drops stays dropped and Verify sees it.
//
// Thread-compatible: Verify is not concurrent with itself.
class IdleConnections {
 public:
  // Opens every connection; fails (closing what it opened) at the first
  // connection that cannot connect or whose call does not succeed, saying
  // which and why: kResourceExhausted when out of file descriptors or ports,
  // kUnavailable when the server does not answer.
  static absl::StatusOr<std::unique_ptr<IdleConnections>> Open(
      const IdleConnectionOptions& options);

  IdleConnections(const IdleConnections&) = delete;
  IdleConnections& operator=(const IdleConnections&) = delete;
  ~IdleConnections();

  int size() const { return static_cast<int>(channels_.size()); }

  // Makes one more call on every connection (same threads, same deadline) and
  // returns how many succeeded: size() while the server still holds them all.
  int Verify();

 private:
  explicit IdleConnections(IdleConnectionOptions options)
      : options_(std::move(options)) {}

  const IdleConnectionOptions options_;
  std::vector<std::shared_ptr<grpc::Channel>> channels_;
};

// "127.0.0.2", 3 -> 127.0.0.2, 127.0.0.3, 127.0.0.4 (the last octet counts
// up). kInvalidArgument if `first` is not an IPv4 address, `count` < 1, or the
// last octet would pass 254.
absl::StatusOr<std::vector<in_addr>> AddressRange(const std::string& first, int count);

}  // namespace traffik::bench
