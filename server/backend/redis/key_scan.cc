#include "backend/redis/key_scan.h"

#include <hiredis/hiredis.h>

#include <algorithm>
#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "backend/redis/cluster_topology.h"
#include "backend/redis/key_slot.h"

namespace traffik {

std::string RedisGlobEscape(absl::string_view literal) {
  std::string out;
  out.reserve(literal.size() + 8);
  for (const char c : literal) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

void RedisKeyScan::Run(RedisCommandSink sink, bool cluster, BucketSelector selector,
                       CountCallback done) {
  std::make_shared<RedisKeyScan>(std::move(sink), cluster, std::move(selector),
                                 std::move(done))
      ->Start();
}

RedisKeyScan::RedisKeyScan(RedisCommandSink sink, bool cluster, BucketSelector selector,
                           CountCallback done)
    : sink_(std::move(sink)),
      cluster_(cluster),
      selector_(std::move(selector)),
      pattern_(RedisGlobEscape(selector_.key_prefix) + "*"),
      done_(std::move(done)) {}

void RedisKeyScan::Start() {
  if (!cluster_) {
    masters_ = {""};
    ScanNext();
    return;
  }
  RedisCommand command;
  command.args = {"CLUSTER", "SLOTS"};
  sink_(std::move(command),
        [self = shared_from_this()](absl::StatusOr<const redisReply*> reply,
                                    absl::string_view node_host) {
          self->OnSlots(std::move(reply), node_host);
        });
}

void RedisKeyScan::Fail(absl::Status status) {
  if (failed_) return;
  failed_ = true;
  std::move(done_)(std::move(status));
}

void RedisKeyScan::OnSlots(absl::StatusOr<const redisReply*> reply,
                           absl::string_view node_host) {
  if (!reply.ok()) return Fail(reply.status());
  const std::optional<std::vector<RedisSlotRange>> ranges =
      ParseClusterSlots(**reply, node_host);
  if (!ranges) return Fail(absl::InternalError("unexpected reply to CLUSTER SLOTS"));
  for (const RedisSlotRange& range : *ranges) {
    if (range.last < range.first) continue;
    if (std::find(masters_.begin(), masters_.end(), range.address) == masters_.end()) {
      masters_.push_back(range.address);
    }
  }
  if (masters_.empty()) {
    return Fail(absl::UnavailableError("the cluster reports no master serving slots"));
  }
  ScanNext();
}

void RedisKeyScan::ScanNext() {
  RedisCommand command;
  command.args = {"SCAN",   cursor_, "MATCH",
                  pattern_, "COUNT", absl::StrCat(kRedisScanCount)};
  command.node = masters_[master_];
  sink_(std::move(command), [self = shared_from_this()](
                                absl::StatusOr<const redisReply*> reply,
                                absl::string_view) { self->OnScan(std::move(reply)); });
}

void RedisKeyScan::OnScan(absl::StatusOr<const redisReply*> reply) {
  if (!reply.ok()) return Fail(reply.status());
  const redisReply& r = **reply;
  // [cursor (bulk string), [key (bulk string), ...]]
  if (r.type != REDIS_REPLY_ARRAY || r.elements != 2 || r.element[0] == nullptr ||
      r.element[0]->type != REDIS_REPLY_STRING || r.element[1] == nullptr ||
      r.element[1]->type != REDIS_REPLY_ARRAY) {
    return Fail(absl::InternalError("unexpected reply to SCAN"));
  }
  cursor_.assign(r.element[0]->str, r.element[0]->len);
  last_page_ = cursor_ == "0";
  // Keys to unlink, grouped by hash slot on a cluster (one group otherwise).
  std::map<int, std::vector<std::string>> groups;
  const redisReply& keys = *r.element[1];
  for (size_t i = 0; i < keys.elements; ++i) {
    const redisReply* k = keys.element[i];
    if (k == nullptr || k->type != REDIS_REPLY_STRING) {
      return Fail(absl::InternalError("unexpected key in a SCAN reply"));
    }
    const absl::string_view key(k->str, k->len);
    if (!absl::StartsWith(key, selector_.key_prefix)) continue;
    if (selector_.matches && !selector_.matches(key)) continue;
    groups[cluster_ ? RedisKeySlot(key) : 0].emplace_back(key);
  }
  std::vector<RedisCommand> unlinks;
  for (auto& [slot, group] : groups) {
    for (size_t at = 0; at < group.size(); at += kRedisUnlinkBatch) {
      RedisCommand command;
      command.keyed = true;
      command.args.reserve(1 + std::min(kRedisUnlinkBatch, group.size() - at));
      command.args.push_back("UNLINK");
      for (size_t i = at; i < group.size() && i < at + kRedisUnlinkBatch; ++i) {
        command.args.push_back(std::move(group[i]));
      }
      unlinks.push_back(std::move(command));
    }
  }
  if (unlinks.empty()) return PageDone();
  pending_unlinks_ = unlinks.size();
  for (RedisCommand& command : unlinks) {
    sink_(std::move(command),
          [self = shared_from_this()](absl::StatusOr<const redisReply*> reply,
                                      absl::string_view) {
            self->OnUnlink(std::move(reply));
          });
  }
}

void RedisKeyScan::OnUnlink(absl::StatusOr<const redisReply*> reply) {
  if (reply.ok()) {
    if ((*reply)->type == REDIS_REPLY_INTEGER && (*reply)->integer >= 0) {
      removed_ += static_cast<uint64_t>((*reply)->integer);
    } else {
      Fail(absl::InternalError("unexpected reply to UNLINK"));
    }
  } else {
    Fail(reply.status());
  }
  if (--pending_unlinks_ == 0) PageDone();
}

void RedisKeyScan::PageDone() {
  if (failed_) return;
  if (last_page_) {
    if (++master_ == masters_.size()) {
      std::move(done_)(removed_);
      return;
    }
    cursor_ = "0";
  }
  ScanNext();
}

}  // namespace traffik
