// Reloading a running Server (in process, fake clock, memory backend): what
// happens to buckets, tenants and shares.
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "app/reload_helpers.h"
#include "app/server.h"
#include "backend/memory/memory_backend.h"
#include "clock/clock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using reload_test::BackendOf;
using reload_test::Hit;
using reload_test::MustParse;

// A config with one memory tenant `t` and throttle `api` of `limit` per
// `period`, plus `extra` YAML under throttles.
std::string OneThrottle(int limit, const std::string& period,
                        const std::string& extra = "") {
  // No background sweep: the tests decide when full buckets are dropped.
  return absl::StrCat("throttles:\n  - {uid: api, limit: ", limit, ", period: ", period,
                      "}\n", extra,
                      "tenants:\n  - {name: t}\ndefault_tenant: t\n"
                      "memory: {sweep_interval: 0s}\n");
}

class ReloadTest : public ::testing::Test {
 protected:
  void Start(const std::string& yaml) {
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::Start(MustParse(yaml), clock_);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  void Reload(const std::string& yaml) {
    ASSERT_TRUE(server_->Reload(MustParse(yaml)).ok());
  }
  absl::StatusOr<Decision> HitApi(const std::string& tenant = "t",
                                  const std::string& id = "user") {
    return Hit(server_->engine(), tenant, "api", id);
  }
  const MemoryBackend& Memory() {
    return *static_cast<const MemoryBackend*>(BackendOf(server_->engine(), "t"));
  }

  FakeClock clock_;
  std::unique_ptr<Server> server_;
};

// Verifies that a bucket drained before a reload stays drained after it (the
// backend and its state are reused) when its throttle did not change.
TEST_F(ReloadTest, DrainedBucketStaysDrained) {
  Start(OneThrottle(3, "1h"));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(HitApi()->allowed);
  ASSERT_FALSE(HitApi()->allowed);
  const Backend* before = BackendOf(server_->engine(), "t");
  Reload(OneThrottle(3, "1h", "  - {uid: other, limit: 5, period: 1m}\n"));
  EXPECT_EQ(BackendOf(server_->engine(), "t"), before);
  absl::StatusOr<Decision> d = HitApi();
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE(d->allowed);
  EXPECT_GT(d->wait_ms, 0u);
  // The new throttle serves at once.
  EXPECT_TRUE(Hit(server_->engine(), "t", "other", "user")->allowed);
}

// Verifies the documented rule for a changed limit with the same period: a
// bucket keeps its token count, capped at the new limit; a higher limit does
// not fill it.
TEST_F(ReloadTest, LimitChangeKeepsTokensCappedAtNewLimit) {
  Start(OneThrottle(10, "1h"));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(HitApi()->allowed);  // 6 left
  Reload(OneThrottle(20, "1h"));
  absl::StatusOr<Decision> d = HitApi();
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->limit, 20u);
  EXPECT_EQ(d->remaining, 5u);  // 6 kept, one taken
  Reload(OneThrottle(3, "1h"));
  d = HitApi();
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->limit, 3u);
  EXPECT_EQ(d->remaining, 2u);  // 5 capped at 3, one taken
}

// Verifies the documented rule for a changed period: the stored
// token-milliseconds are kept, so the token count scales by old/new period.
TEST_F(ReloadTest, PeriodChangeScalesTokens) {
  Start(OneThrottle(10, "1h"));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(HitApi()->allowed);  // 6 left
  Reload(OneThrottle(10, "2h"));
  absl::StatusOr<Decision> d = HitApi();
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->remaining, 2u);  // 6 * 1h / 2h = 3, one taken
}

// Verifies that a bucket that had refilled completely counts as new after a
// reload: full at the new limit (as an expired Redis key would be).
TEST_F(ReloadTest, RefilledBucketIsNewUnderNewLimit) {
  Start(OneThrottle(10, "1h"));
  ASSERT_TRUE(HitApi()->allowed);
  // Full again after 1/10 of the period (one token back); not yet swept, and
  // under the new rate a tenth of the period refills only 2 of 20 tokens.
  clock_.AdvanceMs(360'000);
  ASSERT_EQ(Memory().bucket_count(), 1u);
  Reload(OneThrottle(20, "1h"));
  absl::StatusOr<Decision> d = HitApi();
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->remaining, 19u);  // not 9 + 2 - 1: the full bucket counts as new
}

// Verifies that a removed tenant answers NOT_FOUND at once and its buckets are
// dropped, that the other tenant keeps its buckets, and that a tenant added
// back starts fresh.
TEST_F(ReloadTest, RemovedTenantNotFoundAndBucketsDropped) {
  const std::string both =
      "throttles:\n  - {uid: api, limit: 2, period: 1h}\n"
      "tenants:\n  - {name: t}\n  - {name: gone}\ndefault_tenant: t\n";
  Start(both);
  ASSERT_TRUE(HitApi("t")->allowed);
  ASSERT_TRUE(HitApi("gone")->allowed);
  ASSERT_TRUE(HitApi("gone")->allowed);
  ASSERT_FALSE(HitApi("gone")->allowed);
  const MemoryBackend* memory =
      static_cast<const MemoryBackend*>(BackendOf(server_->engine(), "t"));
  ASSERT_EQ(memory->bucket_count(), 2u);
  Reload(OneThrottle(2, "1h"));
  EXPECT_EQ(HitApi("gone").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(memory->bucket_count(), 1u);
  absl::StatusOr<Decision> kept = HitApi("t");
  ASSERT_TRUE(kept.ok());
  EXPECT_EQ(kept->remaining, 0u);  // t's bucket kept its state
  Reload(both);
  absl::StatusOr<Decision> fresh = HitApi("gone");
  ASSERT_TRUE(fresh.ok());
  EXPECT_TRUE(fresh->allowed);
  EXPECT_EQ(fresh->remaining, 1u);
}

// Verifies that a removed throttle answers NOT_FOUND at once and its memory
// buckets are dropped (the kept throttle's stay).
TEST_F(ReloadTest, RemovedThrottleNotFound) {
  Start(OneThrottle(2, "1h", "  - {uid: other, limit: 5, period: 1m}\n"));
  ASSERT_TRUE(Hit(server_->engine(), "t", "other", "user")->allowed);
  ASSERT_TRUE(HitApi("t")->allowed);
  const MemoryBackend* memory =
      static_cast<const MemoryBackend*>(BackendOf(server_->engine(), "t"));
  ASSERT_EQ(memory->bucket_count(), 2u);
  Reload(OneThrottle(2, "1h"));
  EXPECT_EQ(Hit(server_->engine(), "t", "other", "user").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(memory->bucket_count(), 1u);  // memory resets answer inline
}

// Verifies that a memory tenant's share follows the reloaded config.
TEST_F(ReloadTest, MemorySharesUpdated) {
  auto config = [](int buckets) {
    return absl::StrCat(
        "throttles:\n  - {uid: api, limit: 2, period: 1h}\n"
        "tenants:\n  - {name: t, memory: {max_buckets: ",
        buckets, "}}\n  - {name: u}\ndefault_tenant: t\n");
  };
  Start(config(1));
  ASSERT_TRUE(HitApi("t", "a")->allowed);
  EXPECT_EQ(HitApi("t", "b").status().code(), absl::StatusCode::kResourceExhausted);
  Reload(config(2));
  EXPECT_TRUE(HitApi("t", "b")->allowed);
}

// Verifies that max_identifier_bytes (and the rest of the snapshot settings)
// apply from the next call on.
TEST_F(ReloadTest, SnapshotSettingsApply) {
  Start(OneThrottle(2, "1h"));
  ASSERT_TRUE(HitApi("t", std::string(100, 'x')).ok());
  Reload(OneThrottle(2, "1h", "") + "max_identifier_bytes: 10\n");
  EXPECT_EQ(HitApi("t", std::string(100, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace traffik
