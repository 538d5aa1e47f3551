// The backend registry (schemes -> factories) and the pool of live backends
// that reload reuses.
#include "backend/registry.h"

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "app/backends.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::ElementsAre;

// Counts live FakeBackends.
int live_fakes = 0;

// A backend the registry builds and retires; nothing decides on it here, so
// every operation answers that.
class FakeBackend final : public Backend {
 public:
  FakeBackend() { ++live_fakes; }
  ~FakeBackend() override { --live_fakes; }
  absl::string_view Name() const override { return "fake"; }
  void Decide(absl::string_view, const Rate&, uint64_t, DecisionCallback done) override {
    std::move(done)(NotHere());
  }
  void DecideBatch(absl::Span<const BucketOp>, BatchCallback done) override {
    std::move(done)(NotHere());
  }
  void DecideAllOrNothing(absl::Span<const BucketOp>,
                          AllOrNothingCallback done) override {
    std::move(done)(NotHere());
  }
  void Peek(BackendPartition*, absl::string_view, const Rate&, uint64_t,
            PeekCallback done) override {
    std::move(done)(NotHere());
  }
  void Reset(BackendPartition*, BucketSelector, CountCallback done) override {
    std::move(done)(NotHere());
  }

 private:
  static absl::Status NotHere() {
    return absl::FailedPreconditionError("the registry tests decide nothing");
  }
};

class FakeSettings final : public BackendSettings {
 public:
  explicit FakeSettings(std::string url) : url_(std::move(url)) {}
  std::string Name() const override { return url_; }
  std::string InstanceKey() const override { return url_; }

 private:
  std::string url_;
};

// Serves fake://...; records attaches and detaches.
class FakeFactory final : public BackendFactory {
 public:
  std::vector<std::string> Schemes() const override { return {"fake"}; }
  std::vector<std::string> Forms() const override { return {"fake://..."}; }
  std::string Kind() const override { return "fake"; }
  absl::StatusOr<std::unique_ptr<BackendSettings>> Parse(
      const BackendSpec& spec, const YamlReader& reader) const override {
    if (spec.url == "fake://bad")
      return reader.Error(spec.url_node, spec.url_path, "bad");
    return std::make_unique<FakeSettings>(spec.url);
  }
  absl::StatusOr<std::shared_ptr<Backend>> Create(const BackendSettings&,
                                                  const BackendContext&) const override {
    ++creates;
    return std::shared_ptr<Backend>(std::make_shared<FakeBackend>());
  }
  void Detach(Backend&, const std::string& tenant) const override {
    detached.push_back(tenant);
  }
  mutable int creates = 0;
  mutable std::vector<std::string> detached;
};

BackendPool::Request Tenant(const std::string& name, const std::string& url) {
  BackendPool::Request r;
  r.tenant = name;
  r.spec.url = url;
  r.spec.url_path = "tenants[0].backend";
  return r;
}

class BackendPoolTest : public ::testing::Test {
 protected:
  BackendPoolTest() : factory_(std::make_shared<FakeFactory>()), pool_(registry_, {}) {
    registry_.Register(factory_);
  }
  std::vector<BackendPool::Lease> Acquire(std::vector<BackendPool::Request> requests) {
    absl::StatusOr<std::vector<BackendPool::Lease>> leases =
        pool_.Acquire(requests, reader_);
    EXPECT_TRUE(leases.ok()) << leases.status();
    return leases.value_or(std::vector<BackendPool::Lease>{});
  }

  BackendRegistry registry_;
  std::shared_ptr<FakeFactory> factory_;
  BackendPool pool_;
  YamlReader reader_{"test.yaml"};
};

// Verifies scheme matching: "scheme://" case-insensitively, a bare name
// exactly; and that registering the built-ins twice changes nothing.
TEST(BackendRegistryTest, FindsBuiltinsBySchemeOnce) {
  BackendRegistry registry;
  RegisterBuiltinBackends(registry);
  RegisterBuiltinBackends(registry);
  EXPECT_NE(registry.Find("memory"), nullptr);
  EXPECT_EQ(registry.Find("Memory"), nullptr);
  EXPECT_NE(registry.Find("REDIS://h:1"), nullptr);
  EXPECT_NE(registry.Find("redis+cluster://a:1,b:2"), nullptr);
  EXPECT_EQ(registry.Find("rediss://h"), registry.Find("redis://h"));
  EXPECT_EQ(registry.Find("memcached://h"), nullptr);
  EXPECT_THAT(registry.Forms(),
              ElementsAre("memory", "redis://...", "redis+cluster://...", "rediss://...",
                          "rediss+cluster://..."));
  EXPECT_THAT(registry.SettingsKeys(), ElementsAre("redis"));
  EXPECT_EQ(registry.FindBySettingsKey("redis"), registry.Find("redis://h"));
}

// Verifies that tenants with equal settings share one backend, that a reload
// with unchanged settings reuses it, and that new settings build another.
TEST_F(BackendPoolTest, ReusesEqualSettings) {
  std::vector<BackendPool::Lease> first =
      Acquire({Tenant("a", "fake://x"), Tenant("b", "fake://x")});
  pool_.Release();
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[0].backend, first[1].backend);
  EXPECT_EQ(factory_->creates, 1);
  std::vector<BackendPool::Lease> second =
      Acquire({Tenant("a", "fake://x"), Tenant("c", "fake://y")});
  pool_.Release();
  EXPECT_EQ(second[0].backend, first[0].backend);
  EXPECT_TRUE(second[0].reused);
  EXPECT_FALSE(second[1].reused);
  EXPECT_EQ(factory_->creates, 2);
  EXPECT_THAT(factory_->detached, ElementsAre("b"));  // gone from fake://x
}

// Verifies that a retired backend lives while a snapshot still holds it and is
// destroyed by the pool (not by the holder) once none does.
TEST_F(BackendPoolTest, RetiredBackendOutlivesItsSnapshots) {
  std::vector<BackendPool::Lease> first = Acquire({Tenant("a", "fake://x")});
  pool_.Release();
  std::shared_ptr<Backend> snapshot_ref = first[0].backend;  // a snapshot in flight
  first.clear();
  Acquire({Tenant("a", "fake://y")});
  pool_.Release();
  EXPECT_EQ(live_fakes, 2);  // x retired but held
  EXPECT_EQ(pool_.live_count(), 1u);
  snapshot_ref.reset();
  EXPECT_EQ(live_fakes, 2);  // the pool still has it: destroyed on its next pass
  Acquire({Tenant("a", "fake://y")});
  pool_.Release();
  EXPECT_EQ(live_fakes, 1);
}

// Verifies that a failed Acquire (bad settings) and an abandoned one leave the
// previous backends live.
TEST_F(BackendPoolTest, FailureAndAbandonKeepPrevious) {
  std::vector<BackendPool::Lease> first = Acquire({Tenant("a", "fake://x")});
  pool_.Release();
  absl::StatusOr<std::vector<BackendPool::Lease>> bad =
      pool_.Acquire({Tenant("a", "fake://bad")}, reader_);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("test.yaml:"));
  Acquire({Tenant("a", "fake://z")});
  pool_.Abandon();
  std::vector<BackendPool::Lease> again = Acquire({Tenant("a", "fake://x")});
  pool_.Release();
  EXPECT_EQ(again[0].backend, first[0].backend);
  EXPECT_TRUE(again[0].reused);
}

// Verifies that an unknown scheme is an error naming the field, with the
// password masked.
TEST_F(BackendPoolTest, UnknownSchemeMasksPassword) {
  absl::StatusOr<std::vector<BackendPool::Lease>> leases =
      pool_.Acquire({Tenant("a", "nope://u:hunter2@h")}, reader_);
  ASSERT_FALSE(leases.ok());
  EXPECT_THAT(
      std::string(leases.status().message()),
      ::testing::HasSubstr("tenants[0].backend: unknown backend 'nope://u:***@h'"));
}

}  // namespace
}  // namespace traffik
