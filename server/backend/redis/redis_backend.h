#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "backend/backend.h"
#include "backend/redis/redis_options.h"
#include "base/mutex.h"

struct event_base;
struct event;

namespace traffik {

// A bucket store in Redis (one server, or a Redis Cluster), shared by every
// traffikd replica that points at it. A decision is the bucket script
// (backend/redis/bucket_script.h), atomic in Redis and timed by Redis' clock.
//
// Asynchronous, pipelined and coalesced: callers enqueue operations and
// return at once; one I/O thread (libevent bufferevents; hiredis only parses
// replies) takes everything queued at each wake-up, sends the single
// decisions (Decide, DecideBatch items) waiting for one node (a cluster: one
// hash slot) as one EVALSHA of the each script (at most 128 per call; every
// item answered exactly as its own call would be), anything else as its own
// command, writes it all at once over `pool_size` connections per node
// (TCP_NODELAY), and completes callbacks on that thread as replies arrive.
// Single decisions wait while the node has as many commands in flight as
// connections, and leave together when a reply frees one: so the load sets
// the size of a call, and Redis pays a call's fixed cost once per reply
// instead of once per decision; a lone decision is one EVALSHA of the bucket
// script, with no added delay.
//
// TLS (rediss://, rediss+cluster://): the same connections over OpenSSL
// bufferevents, TLS 1.2+, the server's chain verified against
// tls_options.ca_file (else the system trust store) and its name against
// options.TlsName() (server_name, else the first URL host; every cluster
// node, including those learnt from CLUSTER SLOTS and MOVED, is checked
// against that one name), unless insecure_skip_verify. A connection counts
// as up once the server has answered a PING sent after the handshake, AUTH
// and SELECT.
//
// Faults: every operation has a deadline (`timeout_ms`); a connection whose
// oldest operation misses it is dropped (its operations fail with
// kUnavailable) and reconnected with exponential backoff, as is any dropped
// connection. An operation for a node with no live connection fails at once,
// so a dead Redis never makes callers wait. Cluster: slots are routed from
// CLUSTER SLOTS, MOVED updates the map and retries, ASK retries once with
// ASKING, and the map is refreshed periodically and after topology errors.
//
// Thread-safe. The destructor fails whatever is still in flight.
class RedisBackend final : public Backend {
 public:
  // Starts the I/O thread and begins connecting; does not wait for Redis to
  // be reachable (decisions fail with kUnavailable until it is).
  static absl::StatusOr<std::unique_ptr<RedisBackend>> Create(RedisOptions options);
  ~RedisBackend() override;
  RedisBackend(const RedisBackend&) = delete;
  RedisBackend& operator=(const RedisBackend&) = delete;

  absl::string_view Name() const override { return name_; }
  void Decide(absl::string_view key, const Rate& rate, uint64_t cost,
              DecisionCallback done) override;
  void DecideBatch(absl::Span<const BucketOp> ops, BatchCallback done) override;
  // One EVALSHA of the all-or-nothing script (bucket_script.h) with every
  // key: atomic in Redis, one TIME. Redis Cluster: routed by the first key's
  // slot; keys in several slots (different identifiers) fail at once with
  // kFailedPrecondition, nothing sent.
  void DecideAllOrNothing(absl::Span<const BucketOp> ops,
                          AllOrNothingCallback done) override;
  // The bucket script with its "peek" flag: one EVALSHA that writes nothing.
  void Peek(BackendPartition* partition, absl::string_view key, const Rate& rate,
            uint64_t cost, PeekCallback done) override;
  // SCAN + UNLINK on the I/O loop, on every master of a cluster
  // (backend/redis/key_scan.h); never KEYS. `partition` is ignored: the
  // selector's key prefix scopes the scan to the tenant.
  void Reset(BackendPartition* partition, BucketSelector selector,
             CountCallback done) override;

  // True when at least one connection is up (for tests and logs).
  bool connected() const { return connected_count_.load(std::memory_order_relaxed) > 0; }

  struct Op;
  struct Completion;
  class Loop;

 private:
  explicit RedisBackend(RedisOptions options);

  const RedisOptions options_;
  const std::string name_;
  std::atomic<int> connected_count_{0};
  std::unique_ptr<Loop> loop_;
};

}  // namespace traffik
