#include "backend/redis/cluster_topology.h"

#include <hiredis/hiredis.h>

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "backend/redis/key_slot.h"
#include "base/host_port.h"

namespace traffik {

std::string FormatRedisAddress(absl::string_view host, long long port) {
  return JoinHostPort(host, static_cast<uint32_t>(port));
}

RedisEndpoint ParseRedisAddress(absl::string_view address) {
  HostPort parts = SplitRedisHostPort(address);
  RedisEndpoint endpoint;
  endpoint.host = std::move(parts.host);
  endpoint.port = static_cast<int>(parts.port);
  return endpoint;
}

std::optional<RedisRedirect> ParseRedisRedirect(absl::string_view error,
                                                absl::string_view default_host) {
  RedisRedirect redirect;
  redirect.moved = absl::StartsWith(error, "MOVED ");
  if (!redirect.moved && !absl::StartsWith(error, "ASK ")) return std::nullopt;
  const std::vector<absl::string_view> parts = absl::StrSplit(error, ' ');
  if (parts.size() != 3 || !absl::SimpleAtoi(parts[1], &redirect.slot) ||
      redirect.slot < 0 || redirect.slot >= kRedisClusterSlots || parts[2].empty()) {
    return std::nullopt;
  }
  redirect.address = parts[2].front() == ':' ? absl::StrCat(default_host, parts[2])
                                             : std::string(parts[2]);
  return redirect;
}

std::optional<std::vector<RedisSlotRange>> ParseClusterSlots(
    const redisReply& reply, absl::string_view default_host) {
  if (reply.type != REDIS_REPLY_ARRAY) return std::nullopt;
  std::vector<RedisSlotRange> ranges;
  for (size_t i = 0; i < reply.elements; ++i) {
    const redisReply* range = reply.element[i];
    if (range->type != REDIS_REPLY_ARRAY || range->elements < 3) continue;
    const redisReply* master = range->element[2];
    if (range->element[0]->type != REDIS_REPLY_INTEGER ||
        range->element[1]->type != REDIS_REPLY_INTEGER ||
        master->type != REDIS_REPLY_ARRAY || master->elements < 2 ||
        master->element[1]->type != REDIS_REPLY_INTEGER) {
      continue;
    }
    absl::string_view host;
    if (master->element[0]->type == REDIS_REPLY_STRING) {
      host = absl::string_view(master->element[0]->str, master->element[0]->len);
    }
    if (host.empty()) host = default_host;
    RedisSlotRange out;
    out.address = FormatRedisAddress(host, master->element[1]->integer);
    out.first = static_cast<int>(
        std::clamp<long long>(range->element[0]->integer, 0, kRedisClusterSlots));
    out.last = static_cast<int>(
        std::clamp<long long>(range->element[1]->integer, -1, kRedisClusterSlots - 1));
    ranges.push_back(std::move(out));
  }
  return ranges;
}

}  // namespace traffik
