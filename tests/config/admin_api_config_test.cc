// The `admin_api` config key: off by default, a boolean, errors that name it.
#include "absl/status/status.h"
#include "config/config.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;

// Verifies admin_api is off by default (also in the embedded default config)
// and follows an explicit true or false.
TEST(AdminApiConfigTest, DefaultOffAndExplicit) {
  EXPECT_FALSE(DefaultConfig().admin_api);
  auto unset = ParseConfig("listen: \"127.0.0.1:0\"\n", "t.yaml");
  ASSERT_TRUE(unset.ok()) << unset.status();
  EXPECT_FALSE(unset->admin_api);
  auto on = ParseConfig("admin_api: true\n", "t.yaml");
  ASSERT_TRUE(on.ok()) << on.status();
  EXPECT_TRUE(on->admin_api);
  auto off = ParseConfig("admin_api: false\n", "t.yaml");
  ASSERT_TRUE(off.ok()) << off.status();
  EXPECT_FALSE(off->admin_api);
}

// Verifies a value that is not a boolean is rejected with file:line:col and
// the key's name.
TEST(AdminApiConfigTest, NotABoolean) {
  for (const char* yaml : {"admin_api: yes\n", "admin_api: 1\n", "admin_api: [true]\n"}) {
    auto config = ParseConfig(yaml, "t.yaml");
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument) << yaml;
    EXPECT_THAT(config.status().message(),
                HasSubstr("t.yaml:1:12: admin_api: expected a boolean"))
        << yaml;
  }
}

}  // namespace
}  // namespace traffik
