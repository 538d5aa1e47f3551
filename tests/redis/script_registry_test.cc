// The script registry (script_registry.h): local SHA-1 digests and the choice
// of EVALSHA / EVAL, without a redis-server. That the digests equal what Redis
// computes is checked against a real server in redis_backend_test.cc.

#include "backend/redis/script_registry.h"

#include "backend/redis/bucket_script.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

// Reference digests from `printf %s "$body" | sha1sum`.
constexpr char kReturnOneSha1[] = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
constexpr char kAbcSha1[] = "a9993e364706816aba3e25717850c26c9cd0d89d";

// Verifies Sha1Hex gives the lowercase hex SHA-1 sha1sum gives.
TEST(RedisScriptRegistryTest, Sha1HexMatchesReferenceDigests) {
  EXPECT_EQ(Sha1Hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(Sha1Hex("abc"), kAbcSha1);
  EXPECT_EQ(Sha1Hex("return 1"), kReturnOneSha1);
}

// Verifies each script's digest is the SHA-1 of its own body.
TEST(RedisScriptRegistryTest, HoldsBodiesAndTheirDigests) {
  const RedisScriptRegistry scripts("return 1", "abc", "");
  EXPECT_EQ(scripts.Body(RedisScriptId::kBucket), "return 1");
  EXPECT_EQ(scripts.Sha1(RedisScriptId::kBucket), kReturnOneSha1);
  EXPECT_EQ(scripts.Body(RedisScriptId::kAllOrNothing), "abc");
  EXPECT_EQ(scripts.Sha1(RedisScriptId::kAllOrNothing), kAbcSha1);
  EXPECT_EQ(scripts.Body(RedisScriptId::kEach), "");
  EXPECT_EQ(scripts.Sha1(RedisScriptId::kEach),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

// Verifies the default registry holds the backend's three scripts.
TEST(RedisScriptRegistryTest, DefaultHoldsTheBucketScripts) {
  const RedisScriptRegistry scripts;
  EXPECT_EQ(scripts.Body(RedisScriptId::kBucket), RedisBucketScript());
  EXPECT_EQ(scripts.Sha1(RedisScriptId::kBucket), Sha1Hex(RedisBucketScript()));
  EXPECT_EQ(scripts.Body(RedisScriptId::kAllOrNothing), RedisAllOrNothingScript());
  EXPECT_EQ(scripts.Sha1(RedisScriptId::kAllOrNothing),
            Sha1Hex(RedisAllOrNothingScript()));
  EXPECT_EQ(scripts.Body(RedisScriptId::kEach), RedisEachScript());
  EXPECT_EQ(scripts.Sha1(RedisScriptId::kEach), Sha1Hex(RedisEachScript()));
  EXPECT_NE(scripts.Sha1(RedisScriptId::kBucket),
            scripts.Sha1(RedisScriptId::kAllOrNothing));
  EXPECT_NE(scripts.Sha1(RedisScriptId::kEach), scripts.Sha1(RedisScriptId::kBucket));
  EXPECT_NE(scripts.Sha1(RedisScriptId::kEach),
            scripts.Sha1(RedisScriptId::kAllOrNothing));
}

// Verifies a call is EVALSHA with the digest by default and EVAL with the
// body when the op must use EVAL.
TEST(RedisScriptRegistryTest, EvalShaByDefaultEvalWhenAsked) {
  const RedisScriptRegistry scripts("return 1", "abc", "");
  RedisScriptCall call = scripts.Call(RedisScriptId::kBucket, /*use_eval=*/false);
  EXPECT_EQ(call.verb, "EVALSHA");
  EXPECT_EQ(call.first_arg, kReturnOneSha1);
  call = scripts.Call(RedisScriptId::kBucket, /*use_eval=*/true);
  EXPECT_EQ(call.verb, "EVAL");
  EXPECT_EQ(call.first_arg, "return 1");
  call = scripts.Call(RedisScriptId::kAllOrNothing, /*use_eval=*/false);
  EXPECT_EQ(call.verb, "EVALSHA");
  EXPECT_EQ(call.first_arg, kAbcSha1);
  call = scripts.Call(RedisScriptId::kAllOrNothing, /*use_eval=*/true);
  EXPECT_EQ(call.verb, "EVAL");
  EXPECT_EQ(call.first_arg, "abc");
}

// Verifies a NOSCRIPT reply to an EVALSHA is retried once with EVAL, and
// nothing else is.
TEST(RedisScriptRegistryTest, RetriesWithEvalOnlyAfterNoScript) {
  constexpr char kNoScript[] = "NOSCRIPT No matching script. Please use EVAL.";
  EXPECT_TRUE(RedisScriptRegistry::ShouldRetryWithEval(kNoScript, /*used_eval=*/false));
  // Already an EVAL: no second retry.
  EXPECT_FALSE(RedisScriptRegistry::ShouldRetryWithEval(kNoScript, /*used_eval=*/true));
  EXPECT_FALSE(RedisScriptRegistry::ShouldRetryWithEval("MOVED 1 127.0.0.1:7000",
                                                        /*used_eval=*/false));
  EXPECT_FALSE(RedisScriptRegistry::ShouldRetryWithEval("ERR NOSCRIPT later",
                                                        /*used_eval=*/false));
  EXPECT_FALSE(RedisScriptRegistry::ShouldRetryWithEval("", /*used_eval=*/false));
}

}  // namespace
}  // namespace traffik
