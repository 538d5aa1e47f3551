// Engine::DecideRules (the Envoy RLS decisions) on the memory backend with a
// fake clock, and the Envoy part of Snapshot::Build.
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "backend/memory/memory_backend.h"
#include "clock/clock.h"
#include "engine/engine.h"
#include "engine/key.h"
#include "envoy/rules.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kHourMs = 3'600'000;

class EnvoyEngineTest : public ::testing::Test {
 protected:
  EnvoyEngineTest() : memory_(clock_, MemoryBackendOptions{1'000'000, 0}) {
    TenantConfig def;
    def.name = "default";
    def.prefix = "default";
    TenantConfig gold;
    gold.name = "gold";
    gold.prefix = "gold";
    gold.quota_multiplier = 2.0;
    config_.tenants = {def, gold};
    config_.default_tenant = "default";
    config_.max_identifier_bytes = 32;
  }

  absl::Status Build(const std::string& rules_yaml) {
    absl::StatusOr<envoy::Domain> domain =
        envoy::RuleSet::ParseDomain(rules_yaml, "rl.yaml");
    if (!domain.ok()) return domain.status();
    std::vector<envoy::Domain> domains;
    domains.push_back(*std::move(domain));
    absl::StatusOr<std::shared_ptr<const envoy::RuleSet>> rules =
        envoy::RuleSet::FromDomains(std::move(domains));
    if (!rules.ok()) return rules.status();
    config_.envoy.rules = *rules;
    auto snap = Snapshot::Build(
        config_,
        [this](const TenantConfig&) -> absl::StatusOr<Snapshot::TenantBackend> {
          return Snapshot::TenantBackend(&memory_);
        },
        metrics_);
    if (!snap.ok()) return snap.status();
    snapshot_ = *snap;
    return absl::OkStatus();
  }

  static RuleHit Hit(absl::string_view id, uint64_t rpu, uint64_t cost = 1) {
    RuleHit h;
    h.uid =
        "\x1f"
        "envoy/rl/user";
    h.identifier = id;
    h.requests_per_unit = rpu;
    h.unit_ms = kHourMs;
    h.cost = cost;
    return h;
  }

  absl::StatusOr<std::vector<RuleDecision>> Decide(std::vector<RuleHit> hits,
                                                   bool refuse_group = false,
                                                   absl::string_view tenant = "") {
    absl::StatusOr<std::vector<RuleDecision>> out = absl::InternalError("not run");
    Engine::DecideRules(
        snapshot_, *snapshot_->FindTenant(tenant), hits, refuse_group,
        [&](absl::StatusOr<std::vector<RuleDecision>> d) { out = std::move(d); });
    return out;
  }

  FakeClock clock_;
  MemoryBackend memory_;
  Metrics metrics_;
  Config config_;
  std::shared_ptr<const Snapshot> snapshot_;
};

constexpr char kRules[] = R"yaml(
domain: rl
descriptors:
  - key: user
    rate_limit: {unit: hour, requests_per_unit: 4}
  - key: org
    descriptors:
      - key: team
        rate_limit: {unit: day, requests_per_unit: 2}
)yaml";

// Verifies the snapshot resolves each configured domain to its tenant, and
// each rule with a rate_limit to its bucket uid.
TEST_F(EnvoyEngineTest, SnapshotResolvesDomainsAndRules) {
  config_.envoy.tenant_for_domain["rl"] = "gold";
  ASSERT_TRUE(Build(kRules).ok());
  const Snapshot::EnvoyDomain* d = snapshot_->FindEnvoyDomain("rl");
  ASSERT_NE(d, nullptr);
  EXPECT_EQ(d->tenant->name, "gold");
  EXPECT_EQ(d->rules.size(), 2u);
  std::vector<std::string> uids;
  for (const auto& [rule, state] : d->rules) uids.push_back(state.uid);
  EXPECT_THAT(uids, ::testing::UnorderedElementsAre(EnvoyBucketUid("rl", "user"),
                                                    EnvoyBucketUid("rl", "org.team")));
  EXPECT_EQ(snapshot_->FindEnvoyDomain("other"), nullptr);
}

// Verifies a domain mapped to an unknown tenant and a rate the exact
// arithmetic cannot hold (requests_per_unit * unit in ms > 2^53) stop the
// snapshot with an error naming them.
TEST_F(EnvoyEngineTest, SnapshotRejectsUnknownTenantAndHugeRate) {
  config_.envoy.tenant_for_domain["rl"] = "nobody";
  absl::Status s = Build(kRules);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("nobody"));
  config_.envoy.tenant_for_domain.clear();
  s = Build(R"yaml(
domain: rl
descriptors:
  - key: user
    rate_limit: {unit: year, requests_per_unit: 300000}
)yaml");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("rule 'user'"));
}

// Verifies remaining and duration_until_reset exact to the ms under a fake
// clock: 4/hour is one token per 900000 ms.
TEST_F(EnvoyEngineTest, ExactResetDurations) {
  ASSERT_TRUE(Build(kRules).ok());
  auto d = Decide({Hit("a", 4)});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE((*d)[0].decision.allowed);
  EXPECT_EQ((*d)[0].decision.remaining, 3u);
  EXPECT_EQ((*d)[0].decision.reset_ms, 900'000u);
  clock_.AdvanceMs(1234);
  d = Decide({Hit("a", 4, 3)});
  EXPECT_EQ((*d)[0].decision.remaining, 0u);
  EXPECT_EQ((*d)[0].decision.reset_ms, 4 * 900'000u - 1234u);
  d = Decide({Hit("a", 4)});
  EXPECT_FALSE((*d)[0].decision.allowed);
  EXPECT_EQ((*d)[0].decision.wait_ms, 900'000u - 1234u);
}

// Verifies all or nothing: a refused hit leaves the others untouched; a cost
// above the capacity refuses the group without writing; refuse_group only
// describes; an independent hit is decided on its own.
TEST_F(EnvoyEngineTest, AllOrNothingGroup) {
  ASSERT_TRUE(Build(kRules).ok());
  ASSERT_TRUE(Decide({Hit("full", 4, 4)}).ok());
  auto d = Decide({Hit("b", 4), Hit("full", 4)});
  ASSERT_TRUE(d.ok());
  EXPECT_FALSE((*d)[1].decision.allowed);
  EXPECT_EQ((*d)[0].decision.remaining, 4u);  // b: nothing taken
  d = Decide({Hit("b", 4), Hit("c", 4, 5)});
  EXPECT_FALSE((*d)[1].decision.allowed);
  EXPECT_EQ((*d)[1].decision.remaining, 4u);
  d = Decide({Hit("b", 4)}, /*refuse_group=*/true);
  EXPECT_EQ((*d)[0].decision.remaining, 4u);
  RuleHit shadow = Hit("full", 4);
  shadow.independent = true;
  d = Decide({Hit("b", 4), shadow});
  EXPECT_FALSE((*d)[1].decision.allowed);
  EXPECT_TRUE((*d)[0].decision.allowed);
  EXPECT_EQ((*d)[0].decision.remaining, 3u);  // taken despite the refused shadow hit
}

// Verifies the tenant's quota multiplier scales the capacity, and that an
// override (rate in the key) never shares a bucket with the configured rate.
TEST_F(EnvoyEngineTest, MultiplierAndOverrideKeys) {
  ASSERT_TRUE(Build(kRules).ok());
  auto d = Decide({Hit("m", 4)}, false, "gold");
  EXPECT_EQ((*d)[0].decision.limit, 8u);
  RuleHit over = Hit("m", 4);
  over.rate_in_key = true;
  d = Decide({over}, false, "gold");
  EXPECT_EQ((*d)[0].decision.remaining, 7u);  // its own bucket, not the one above
}

// Verifies a bucket identity over max_identifier_bytes is kInvalidArgument
// naming the descriptor, and nothing is taken.
TEST_F(EnvoyEngineTest, IdentityBound) {
  ASSERT_TRUE(Build(kRules).ok());
  RuleHit big = Hit(std::string(33, 'x'), 4);
  const std::string id(33, 'x');
  big.identifier = id;
  big.descriptor_index = 3;
  auto d = Decide({Hit("ok", 4), big});
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("descriptors[3]"));
  d = Decide({Hit("ok", 4)});
  EXPECT_EQ((*d)[0].decision.remaining, 3u);
}

}  // namespace
}  // namespace traffik
