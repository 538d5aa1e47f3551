// Reloading a running Server whose tenants use Redis (a real redis-server):
// the backend and its connections are kept while the settings are unchanged,
// and bucket state follows the same rules as on the memory backend.
#include <algorithm>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "app/reload_helpers.h"
#include "app/server.h"
#include "backend/memory/memory_backend.h"
#include "backend/redis/redis_backend.h"
#include "clock/clock.h"
#include "gtest/gtest.h"
#include "redis/redis_harness.h"

namespace traffik {
namespace {

using reload_test::BackendOf;
using reload_test::Hit;
using reload_test::MustParse;
using testing_redis::RedisServer;

class RedisReloadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RedisServer>> redis = RedisServer::Start();
    ASSERT_TRUE(redis.ok()) << redis.status();
    redis_ = *std::move(redis);
  }
  void TearDown() override { server_.reset(); }

  // Tenant `r` on the Redis (with `redis_settings` as its redis: map) and
  // tenant `m` on `m_backend`; throttle `api` of `limit` per `period`.
  std::string Config(int limit, const std::string& period,
                     const std::string& redis_settings = "{pool_size: 2}",
                     const std::string& m_backend = "memory",
                     const std::string& extra_throttles = "") {
    return absl::StrCat("throttles:\n  - {uid: api, limit: ", limit, ", period: ", period,
                        "}\n", extra_throttles, "tenants:\n  - name: r\n    backend: \"",
                        redis_->url(), "\"\n    redis: ", redis_settings,
                        "\n  - name: m\n    backend: \"", m_backend,
                        "\"\ndefault_tenant: r\n");
  }
  void Start(const std::string& yaml) {
    absl::StatusOr<std::unique_ptr<Server>> server =
        Server::Start(MustParse(yaml), SteadyClock::Get());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    WaitConnected();
  }
  void Reload(const std::string& yaml) {
    ASSERT_TRUE(server_->Reload(MustParse(yaml)).ok());
    WaitConnected();
  }
  void WaitConnected() {
    const auto* redis =
        static_cast<const RedisBackend*>(BackendOf(server_->engine(), "r"));
    for (int i = 0; i < 500 && !redis->connected(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ASSERT_TRUE(redis->connected());
  }
  absl::StatusOr<Decision> HitApi(const std::string& tenant, const std::string& id) {
    return Hit(server_->engine(), tenant, "api", id);
  }
  // The ids of the clients connected to Redis, except the one asking.
  std::vector<std::string> ClientIds() {
    absl::StatusOr<std::string> list = redis_->Command({"CLIENT", "LIST"});
    EXPECT_TRUE(list.ok()) << list.status();
    std::vector<std::string> ids;
    for (absl::string_view line : absl::StrSplit(list.value_or(""), '\n')) {
      if (line.empty() || absl::StrContains(line, "cmd=client")) continue;
      ids.emplace_back(line.substr(0, line.find(' ')));
    }
    std::sort(ids.begin(), ids.end());
    return ids;
  }

  std::unique_ptr<RedisServer> redis_;
  std::unique_ptr<Server> server_;
};

// Verifies that a reload with unchanged Redis settings keeps the same backend
// object and the same connections (no reconnect), and that changed settings
// build a new backend (the old one is retired).
TEST_F(RedisReloadTest, ReusesBackendAndConnections) {
  Start(Config(5, "1h"));
  ASSERT_TRUE(HitApi("r", "u")->allowed);
  const Backend* before = BackendOf(server_->engine(), "r");
  const std::vector<std::string> ids = ClientIds();
  ASSERT_EQ(ids.size(), 2u);  // pool_size
  Reload(Config(7, "1h", "{pool_size: 2}", "memory",
                "  - {uid: new, limit: 1, period: 1m}\n"));
  EXPECT_EQ(BackendOf(server_->engine(), "r"), before);
  ASSERT_TRUE(HitApi("r", "u")->allowed);
  EXPECT_EQ(ClientIds(), ids);

  Reload(Config(7, "1h", "{pool_size: 3}"));
  EXPECT_NE(BackendOf(server_->engine(), "r"), before);
  EXPECT_EQ(server_->backends().live_count(), 2u);  // memory + the new Redis one
  ASSERT_TRUE(HitApi("r", "u")->allowed);           // the state is in Redis: shared
}

// Verifies that a bucket drained before a reload stays drained after it on
// Redis.
TEST_F(RedisReloadTest, DrainedBucketStaysDrained) {
  Start(Config(3, "1h"));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(HitApi("r", "d")->allowed);
  ASSERT_FALSE(HitApi("r", "d")->allowed);
  Reload(Config(3, "1h", "{pool_size: 2}", "memory",
                "  - {uid: new, limit: 1, period: 1m}\n"));
  absl::StatusOr<Decision> d = HitApi("r", "d");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_FALSE(d->allowed);
  EXPECT_GT(d->wait_ms, 0u);
}

// Verifies the documented limit-change rule on Redis, as on memory: the token
// count is kept, capped at the new limit; a changed period scales it by
// old/new period.
TEST_F(RedisReloadTest, LimitChangeAppliesAsDocumented) {
  Start(Config(10, "1h"));
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(HitApi("r", "l")->allowed);  // 6 left
  Reload(Config(20, "1h"));
  absl::StatusOr<Decision> d = HitApi("r", "l");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->limit, 20u);
  EXPECT_EQ(d->remaining, 5u);
  Reload(Config(3, "1h"));
  d = HitApi("r", "l");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->remaining, 2u);
  Reload(Config(3, "2h"));
  d = HitApi("r", "l");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->remaining, 0u);  // 2 * 1h / 2h = 1, one taken
}

// Verifies that a tenant moved to another backend starts fresh there, both
// ways, and that its memory buckets are dropped when it leaves memory.
TEST_F(RedisReloadTest, TenantMovedStartsFresh) {
  Start(Config(2, "1h"));
  ASSERT_TRUE(HitApi("m", "x")->allowed);
  ASSERT_TRUE(HitApi("m", "x")->allowed);
  ASSERT_FALSE(HitApi("m", "x")->allowed);
  Reload(Config(2, "1h", "{pool_size: 2}", redis_->url()));
  // No memory tenant is left: the memory backend (and m's buckets) is gone;
  // r and m share one Redis backend (equal settings).
  EXPECT_EQ(server_->backends().live_count(), 1u);
  // Its metrics source outlives it safely.
  EXPECT_NE(server_->metrics().RenderText().find("traffik_buckets{backend=\"memory\"} 0"),
            std::string::npos);
  absl::StatusOr<Decision> d = HitApi("m", "x");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->remaining, 1u);
  ASSERT_TRUE(HitApi("m", "x")->allowed);  // drained on Redis now
  Reload(Config(2, "1h"));
  d = HitApi("m", "x");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->allowed);
  EXPECT_EQ(d->remaining, 1u);
}

// Verifies that removed throttles and tenants take their Redis buckets with
// them (reset in the background after the reload): a removed throttle's keys
// go while the kept throttle's stay; a tenant moved off Redis, and a tenant
// removed, leave no keys behind.
TEST_F(RedisReloadTest, RemovedThrottlesAndTenantsDropTheirKeys) {
  const std::string extra = "  - {uid: extra, limit: 5, period: 1h}\n";
  Start(Config(5, "1h", "{pool_size: 2}", redis_->url(), extra));
  ASSERT_TRUE(HitApi("r", "x")->allowed);
  ASSERT_TRUE(Hit(server_->engine(), "r", "extra", "x")->allowed);
  ASSERT_TRUE(HitApi("m", "y")->allowed);  // m is on the Redis too
  auto exists = [&](const std::string& key) {
    absl::StatusOr<std::string> n = redis_->Command({"EXISTS", key});
    EXPECT_TRUE(n.ok()) << n.status();
    return n.value_or("") == "1";
  };
  auto wait_gone = [&](const std::string& key) {
    for (int i = 0; i < 200 && exists(key); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return !exists(key);
  };
  ASSERT_TRUE(exists("r:api:{x}"));
  ASSERT_TRUE(exists("r:extra:{x}"));
  ASSERT_TRUE(exists("m:api:{y}"));

  // The throttle `extra` is removed; m moves to memory.
  Reload(Config(5, "1h"));
  EXPECT_TRUE(wait_gone("r:extra:{x}"));
  EXPECT_TRUE(wait_gone("m:api:{y}"));
  EXPECT_TRUE(exists("r:api:{x}"));
  // The kept bucket kept its state (one token taken).
  absl::StatusOr<Decision> d = HitApi("r", "x");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->remaining, 3u);

  // m back on Redis, then removed altogether.
  Reload(Config(5, "1h", "{pool_size: 2}", redis_->url()));
  ASSERT_TRUE(HitApi("m", "z")->allowed);
  ASSERT_TRUE(exists("m:api:{z}"));
  Reload(absl::StrCat("throttles:\n  - {uid: api, limit: 5, period: 1h}\n",
                      "tenants:\n  - name: r\n    backend: \"", redis_->url(),
                      "\"\n    redis: {pool_size: 2}\ndefault_tenant: r\n"));
  EXPECT_TRUE(wait_gone("m:api:{z}"));
  EXPECT_TRUE(exists("r:api:{x}"));
}

}  // namespace
}  // namespace traffik
