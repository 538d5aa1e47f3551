// Envoy RLS bucket uids (engine/key.h EnvoyBucketUid).
#include <string>

#include "engine/key.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

// Verifies the readable form: "\x1f" "envoy/<domain>/<rule path>", with '/',
// ':', '{', '}', '%', '#' and bytes outside printable ASCII percent-encoded.
TEST(EnvoyBucketUidTest, ReadableAndEscaped) {
  EXPECT_EQ(EnvoyBucketUid("rl", "user"),
            "\x1f"
            "envoy/rl/user");
  EXPECT_EQ(EnvoyBucketUid("a:b", "path_/x{y}%#"),
            "\x1f"
            "envoy/a%3Ab/path_%2Fx%7By%7D%25%23");
  EXPECT_EQ(EnvoyBucketUid("d", "k_\xc3\xa9\n"),
            "\x1f"
            "envoy/d/k_%C3%A9%0A");
  EXPECT_EQ(EnvoyBucketUid("d", ""),
            "\x1f"
            "envoy/d/");
}

// Verifies that domain and path never run into each other: ("a/b", "c") and
// ("a", "b/c") get different uids.
TEST(EnvoyBucketUidTest, Unambiguous) {
  EXPECT_NE(EnvoyBucketUid("a/b", "c"), EnvoyBucketUid("a", "b/c"));
  EXPECT_NE(EnvoyBucketUid("a", "b"), EnvoyBucketUid("a", "b%2F"));
}

// Verifies that a uid whose readable form would exceed kMaxThrottleUidBytes is
// a SHA-256 (distinct for distinct inputs, within the bound).
TEST(EnvoyBucketUidTest, LongPathsAreHashed) {
  const std::string long_path(300, 'p');
  const std::string uid = EnvoyBucketUid("d", long_path);
  EXPECT_EQ(uid.size(), 7u + 64u);
  EXPECT_EQ(uid.substr(0, 7),
            "\x1f"
            "envoy#");
  EXPECT_NE(uid, EnvoyBucketUid("d", long_path + "q"));
  EXPECT_NE(uid, EnvoyBucketUid("e", long_path));
}

// Verifies that no traffik.v1 call can name an Envoy bucket (the uid rule
// refuses the 0x1f byte) and that keys built from the uid parse back.
TEST(EnvoyBucketUidTest, UnreachableFromTraffikV1AndParses) {
  const std::string uid = EnvoyBucketUid("rl", "path_/login");
  EXPECT_EQ(ValidateThrottleUid(uid).code(), absl::StatusCode::kInvalidArgument);
  std::string key;
  BuildBucketKey("tenant", uid, "4:user5:alice", &key);
  auto parts = ParseBucketKey(key);
  ASSERT_TRUE(parts.has_value());
  EXPECT_EQ(parts->prefix, "tenant");
  EXPECT_EQ(parts->uid, uid);
  EXPECT_EQ(parts->identifier, "4:user5:alice");
  BuildInlineBucketKey("tenant", uid, "4:user5:alice", 2, 3'600'000, &key);
  parts = ParseBucketKey(key);
  ASSERT_TRUE(parts.has_value());
  EXPECT_TRUE(parts->is_inline);
  EXPECT_EQ(parts->limit, 2u);
  EXPECT_EQ(parts->period_ms, 3'600'000u);
}

}  // namespace
}  // namespace traffik
