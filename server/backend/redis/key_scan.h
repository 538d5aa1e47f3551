#pragma once

// Forgetting buckets in Redis (Backend::Reset): SCAN with a MATCH pattern on
// every master, the keys found checked against the selector, then UNLINK in
// batches. The job is a state machine over a command sink, with no I/O of its
// own: the backend runs it on its I/O loop (every reply callback, and so every
// next command, on that thread), and tests drive it with a fake sink.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "backend/backend.h"

struct redisReply;

namespace traffik {

// `literal` as a Redis glob pattern that matches exactly it: '*', '?', '[',
// ']' and '\' are escaped with '\'. Binary-safe.
std::string RedisGlobEscape(absl::string_view literal);

// One command for the sink. `node` ("host:port", as CLUSTER SLOTS names it)
// sends it to that node; empty routes it by `args[1]` (a key) like any
// keyed command (a standalone Redis has one node anyway), or to any node
// when `keyed` is false.
struct RedisCommand {
  std::vector<std::string> args;
  std::string node;
  bool keyed = false;
};
// The reply (valid only during the call) and the host of the node that
// answered, or the error (outage, or an error reply: kUnavailable / kInternal
// as the backend classifies it).
using RedisReplyCallback =
    absl::AnyInvocable<void(absl::StatusOr<const redisReply*> reply,
                            absl::string_view node_host) &&>;
using RedisCommandSink = std::function<void(RedisCommand, RedisReplyCallback)>;

// Keys a SCAN page asks for (COUNT) and keys per UNLINK.
inline constexpr int kRedisScanCount = 1000;
inline constexpr size_t kRedisUnlinkBatch = 500;

// Runs one reset: (cluster: CLUSTER SLOTS for the masters, then) SCAN
// <cursor> MATCH <escaped key_prefix>* COUNT kRedisScanCount on each master
// in turn until its cursor is 0; after each page the keys `selector` accepts
// are unlinked (cluster: one UNLINK per hash slot, as multi-key commands must
// stay in one slot; at most kRedisUnlinkBatch keys each) before the next page
// is asked for. `done` gets the sum of UNLINK's counts (keys that existed),
// or the first error (nothing more is sent after it). Never uses KEYS.
//
// Not thread-safe: every reply callback must run on one thread (the I/O loop).
class RedisKeyScan : public std::enable_shared_from_this<RedisKeyScan> {
 public:
  static void Run(RedisCommandSink sink, bool cluster, BucketSelector selector,
                  CountCallback done);

  RedisKeyScan(RedisCommandSink sink, bool cluster, BucketSelector selector,
               CountCallback done);

 private:
  void Start();
  void OnSlots(absl::StatusOr<const redisReply*> reply, absl::string_view node_host);
  void ScanNext();
  void OnScan(absl::StatusOr<const redisReply*> reply);
  void OnUnlink(absl::StatusOr<const redisReply*> reply);
  void PageDone();
  void Fail(absl::Status status);

  const RedisCommandSink sink_;
  const bool cluster_;
  const BucketSelector selector_;
  const std::string pattern_;
  CountCallback done_;
  std::vector<std::string> masters_;  // cluster: addresses; standalone: {""}
  size_t master_ = 0;
  std::string cursor_ = "0";
  bool last_page_ = false;  // the page being unlinked ended its master's scan
  size_t pending_unlinks_ = 0;
  uint64_t removed_ = 0;
  bool failed_ = false;
};

}  // namespace traffik
