#include "backend/redis/script_registry.h"

#include <openssl/sha.h>

#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "backend/redis/bucket_script.h"

namespace traffik {

std::string Sha1Hex(absl::string_view data) {
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(digest), sizeof(digest)));
}

RedisScriptRegistry::RedisScriptRegistry()
    : RedisScriptRegistry(RedisBucketScript(), RedisAllOrNothingScript(),
                          RedisEachScript()) {}

RedisScriptRegistry::RedisScriptRegistry(std::string bucket, std::string all_or_nothing,
                                         std::string each) {
  entries_[static_cast<size_t>(RedisScriptId::kBucket)].body = std::move(bucket);
  entries_[static_cast<size_t>(RedisScriptId::kAllOrNothing)].body =
      std::move(all_or_nothing);
  entries_[static_cast<size_t>(RedisScriptId::kEach)].body = std::move(each);
  for (Entry& e : entries_) e.sha1 = Sha1Hex(e.body);
}

RedisScriptCall RedisScriptRegistry::Call(RedisScriptId id, bool use_eval) const {
  const Entry& e = entry(id);
  if (use_eval) return {"EVAL", e.body};
  return {"EVALSHA", e.sha1};
}

bool RedisScriptRegistry::ShouldRetryWithEval(absl::string_view error, bool used_eval) {
  return !used_eval && absl::StartsWith(error, "NOSCRIPT");
}

}  // namespace traffik
