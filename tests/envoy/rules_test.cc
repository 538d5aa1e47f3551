#include "envoy/rules.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace traffik::envoy {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

// Upstream test inputs (envoyproxy/ratelimit test/config/*.yaml), rewritten
// here as our own inputs.

// From test/config/basic_config.yaml.
constexpr char kBasic[] = R"(
# Basic configuration for testing.
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit:
          unit: second
          requests_per_unit: 5
      - key: subkey1
        value: subvalue1
        rate_limit:
          unit: second
          requests_per_unit: 10
  - key: key2
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: key2
    value: value2
    rate_limit:
      unit: minute
      requests_per_unit: 30
  # First level override with no limit. This effectively whitelists the value.
  - key: key2
    value: value3
  - key: key3
    rate_limit:
      unit: hour
      requests_per_unit: 1
  - key: key4
    rate_limit:
      name: key4_rate_limit
      unit: day
      requests_per_unit: 1
  - key: key5
    value: value5
    rate_limit:
      unit: day
      requests_per_unit: 15
    descriptors:
      - key: subkey5
        value: subvalue5
        rate_limit:
          unit: day
          requests_per_unit: 25
  - key: key6
    rate_limit:
      unlimited: true
  - key: key7
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 70
)";

// From test/config/wildcard.yaml.
constexpr char kWildcard[] = R"(
domain: test-domain
descriptors:
  - key: wild
    value: foo*
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: noWild
    value: foo
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: noVal
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: midWild
    value: bar*b
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: multiWild
    value: foo*bar*baz
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: nestedWild
    value: val1
    descriptors:
      - key: wild
        value: goo*
        rate_limit:
          unit: minute
          requests_per_unit: 20
)";

// From test/config/shadowmode_config.yaml.
constexpr char kShadow[] = R"(
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit:
          unit: second
          requests_per_unit: 5
      - key: subkey1
        value: subvalue1
        rate_limit:
          unit: second
          requests_per_unit: 10
        shadow_mode: true
  - key: key2
    rate_limit:
      unit: minute
      requests_per_unit: 20
    shadow_mode: true
  - key: key2
    value: value2
    rate_limit:
      unit: minute
      requests_per_unit: 30
)";

// From test/config/share_threshold.yaml.
constexpr char kShare[] = R"(
domain: test-domain
descriptors:
  - key: files
    value: files/*
    share_threshold: true
    rate_limit:
      unit: minute
      requests_per_unit: 100
  - key: nested
    value: parent
    descriptors:
      - key: files
        value: nested/*
        share_threshold: true
        rate_limit:
          unit: minute
          requests_per_unit: 200
  - key: files
    value: top/*
    share_threshold: true
    descriptors:
      - key: files
        value: nested/*
        share_threshold: true
        rate_limit:
          unit: minute
          requests_per_unit: 300
  - key: route
    value: api/*
    share_threshold: true
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit:
          unit: minute
          requests_per_unit: 60
  - key: service
    value: svc/*
    share_threshold: true
    descriptors:
      - key: endpoint
        detailed_metric: true
        rate_limit:
          unit: minute
          requests_per_unit: 80
  - key: path
    value: path/*
    share_threshold: true
    descriptors:
      - key: file
        value: file/*
        share_threshold: false
        descriptors:
          - key: type
            rate_limit:
              unit: minute
              requests_per_unit: 120
  - key: user
    value: user/*
    share_threshold: true
    descriptors:
      - key: resource
        value: res/*
        share_threshold: true
        descriptors:
          - key: action
            rate_limit:
              unit: minute
              requests_per_unit: 150
  - key: file
    value: test1
    rate_limit:
      unit: minute
      requests_per_unit: 50
  - key: file
    value: test*
    share_threshold: true
    rate_limit:
      unit: minute
      requests_per_unit: 100
  - key: midpath
    value: /api*v1
    share_threshold: true
    rate_limit:
      unit: minute
      requests_per_unit: 100
  - key: multiroute
    value: svc*ep*rpc
    share_threshold: true
    rate_limit:
      unit: minute
      requests_per_unit: 50
  - key: midroute
    value: /api*v2
    share_threshold: true
    value_to_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 80
  - key: tenant
    value: t*prod
    share_threshold: true
    descriptors:
      - key: resource
        value: res*v2
        share_threshold: true
        rate_limit:
          unit: minute
          requests_per_unit: 60
)";

// From test/config/metadata.yaml.
constexpr char kMetadata[] = R"(
domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit:
          unit: second
          requests_per_unit: 5
        metadata:
          name: service_1
      - key: subkey1
        value: subvalue1
        rate_limit:
          unit: second
          requests_per_unit: 10
  - key: key2
    rate_limit:
      unit: minute
      requests_per_unit: 20
    metadata:
      service_with_quota:
        name: service_2
)";

// From test/config/merge_domain_key1.yaml and merge_domain_key2.yaml.
constexpr char kMerge1[] = R"(
domain: test-domain
descriptors:
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 10
)";
constexpr char kMerge2[] = R"(
domain: test-domain
descriptors:
  - key: key2
    value: value2
    rate_limit:
      unit: minute
      requests_per_unit: 20
)";

class RulesTest : public ::testing::Test {
 protected:
  // Parses `yaml` as file `name` into a one-domain set (the test fails on error).
  const Domain& Load(const char* yaml, const char* name = "test.yaml") {
    absl::StatusOr<Domain> d = RuleSet::ParseDomain(yaml, name);
    EXPECT_TRUE(d.ok()) << d.status();
    std::vector<Domain> v;
    if (d.ok()) v.push_back(*std::move(d));
    absl::StatusOr<std::shared_ptr<const RuleSet>> set =
        RuleSet::FromDomains(std::move(v));
    EXPECT_TRUE(set.ok()) << set.status();
    set_ = *set;
    static const Domain kEmpty;
    return set_->domains().empty() ? kEmpty : set_->domains()[0];
  }

  static Match M(const Domain& d, std::vector<std::pair<std::string, std::string>> kv) {
    std::vector<Entry> entries;
    storage_ = std::move(kv);
    for (const auto& [k, v] : storage_) entries.push_back({k, v});
    return RuleSet::MatchDescriptor(d, entries);
  }

  // The limit a descriptor gets: requests_per_unit, or -1 when none.
  static int64_t Rpu(const Domain& d,
                     std::vector<std::pair<std::string, std::string>> kv) {
    Match m = M(d, std::move(kv));
    if (m.rule == nullptr) return -1;
    return m.rule->rate_limit->requests_per_unit;
  }

  static std::string ParseError(const char* yaml, const char* name = "bad.yaml") {
    absl::StatusOr<Domain> d = RuleSet::ParseDomain(yaml, name);
    EXPECT_FALSE(d.ok());
    if (d.ok()) return "";
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    return std::string(d.status().message());
  }

  std::shared_ptr<const RuleSet> set_;
  static inline std::vector<std::pair<std::string, std::string>> storage_;
};

// Verifies upstream's TestBasicConfig: exact over bare key, last-entry rule,
// whitelisting.
TEST_F(RulesTest, BasicConfigMatchesAsUpstream) {
  const Domain& d = Load(kBasic);
  EXPECT_EQ(Rpu(d, {}), -1);
  EXPECT_EQ(Rpu(d, {{"key1", "something"}}), -1);
  EXPECT_EQ(Rpu(d, {{"key1", "value1"}}), -1);  // node without a limit
  EXPECT_EQ(Rpu(d, {{"key2", "value2"}, {"subkey", "subvalue"}}), -1);
  EXPECT_EQ(Rpu(d, {{"key5", "value5"}, {"subkey5", "subvalue"}}), -1);
  EXPECT_EQ(Rpu(d, {{"key1", "value1"}, {"subkey1", "something"}}), 5);
  EXPECT_EQ(Rpu(d, {{"key1", "value1"}, {"subkey1", "subvalue1"}}), 10);
  EXPECT_EQ(Rpu(d, {{"key2", "something"}}), 20);
  EXPECT_EQ(Rpu(d, {{"key2", "value2"}}), 30);
  EXPECT_EQ(Rpu(d, {{"key2", "value3"}}), -1);  // whitelisted: no fallback to bare key2
  EXPECT_EQ(Rpu(d, {{"key3", "foo"}}), 1);
  EXPECT_EQ(Rpu(d, {{"key5", "value5"}}), 15);
  EXPECT_EQ(Rpu(d, {{"key5", "value5"}, {"subkey5", "subvalue5"}}), 25);
  Match m = M(d, {{"key4", "foo"}});
  ASSERT_NE(m.rule, nullptr);
  EXPECT_EQ(m.rule->rate_limit->name, "key4_rate_limit");
  EXPECT_EQ(m.rule->rate_limit->unit, Unit::kDay);
  EXPECT_EQ(m.rule->path, "key4");
  m = M(d, {{"key6", "foo"}});
  ASSERT_NE(m.rule, nullptr);
  EXPECT_TRUE(m.rule->rate_limit->unlimited);
  m = M(d, {{"key7", "x"}});
  ASSERT_NE(m.rule, nullptr);
  EXPECT_TRUE(m.rule->detailed_metric);
  EXPECT_EQ(M(d, {{"key1", "value1"}, {"subkey1", "subvalue1"}}).rule->path,
            "key1_value1.subkey1_subvalue1");
}

// Verifies a limit applies only at the descriptor's last entry, never to a prefix or a
// longer one.
TEST_F(RulesTest, LimitOnlyAtLastEntry) {
  const Domain& d = Load(kBasic);
  // key5_value5 has a limit and children; a deeper unmatched entry drops it.
  EXPECT_EQ(Rpu(d, {{"key5", "value5"}, {"other", "x"}}), -1);
  // key3 has a limit and no children: a longer descriptor matches nothing.
  EXPECT_EQ(Rpu(d, {{"key3", "foo"}, {"subkey", "x"}}), -1);
  EXPECT_EQ(Rpu(d, {{"nokey", "x"}}), -1);
}

// Verifies upstream's TestWildcardConfig: trailing, middle and multiple wildcards,
// nested.
TEST_F(RulesTest, WildcardsMatchAsUpstream) {
  const Domain& d = Load(kWildcard);
  EXPECT_EQ(Rpu(d, {{"noVal", "foo1"}}), 20);
  Match w1 = M(d, {{"wild", "foo1"}});
  Match w2 = M(d, {{"wild", "foo2"}});
  ASSERT_NE(w1.rule, nullptr);
  EXPECT_EQ(w1.rule, w2.rule);
  EXPECT_EQ(w1.rule->path, "wild_foo*");
  EXPECT_NE(w1.bucket_id, w2.bucket_id);             // each value its own bucket
  EXPECT_EQ(M(d, {{"wild", "foo"}}).rule, w1.rule);  // '*' matches nothing too
  Match nested = M(d, {{"nestedWild", "val1"}, {"wild", "goo2"}});
  ASSERT_NE(nested.rule, nullptr);
  EXPECT_EQ(nested.rule->path, "nestedWild_val1.wild_goo*");
  EXPECT_EQ(Rpu(d, {{"wild", "bar"}}), -1);
  EXPECT_EQ(Rpu(d, {{"noWild", "foo1"}}), -1);  // no eager prefix match
  EXPECT_EQ(Rpu(d, {{"midWild", "barab"}}), 20);
  EXPECT_EQ(Rpu(d, {{"midWild", "bar123b"}}), 20);
  EXPECT_EQ(Rpu(d, {{"midWild", "barb"}}), 20);
  EXPECT_EQ(Rpu(d, {{"midWild", "bara"}}), -1);
  EXPECT_EQ(Rpu(d, {{"midWild", "xbarb"}}), -1);
  EXPECT_EQ(Rpu(d, {{"multiWild", "foo123bar456baz"}}), 10);
  EXPECT_EQ(Rpu(d, {{"multiWild", "foobarbaz"}}), 10);
  EXPECT_EQ(Rpu(d, {{"multiWild", "foo123baz"}}), -1);
  EXPECT_EQ(Rpu(d, {{"multiWild", "bar456baz"}}), -1);
  // Prefix and suffix may not overlap: "ab*ba" needs 4 bytes.
  const Domain& o = Load(R"(
domain: d
descriptors:
  - key: k
    value: ab*ba
    rate_limit: {unit: second, requests_per_unit: 1}
)");
  EXPECT_EQ(Rpu(o, {{"k", "aba"}}), -1);
  EXPECT_EQ(Rpu(o, {{"k", "abba"}}), 1);
}

// Verifies the order at one level: exact value, then the first wildcard in file order,
// then the bare key.
TEST_F(RulesTest, ExactThenFirstWildcardThenBareKey) {
  const Domain& d = Load(R"(
domain: d
descriptors:
  - key: k
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: k
    value: a*
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: k
    value: ab*
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: k
    value: abc
    rate_limit: {unit: second, requests_per_unit: 4}
  - key: k
    value: "*c"
    rate_limit: {unit: second, requests_per_unit: 5}
)");
  EXPECT_EQ(Rpu(d, {{"k", "abc"}}), 4);
  EXPECT_EQ(Rpu(d, {{"k", "abd"}}), 2);  // a* comes first in the file
  EXPECT_EQ(Rpu(d, {{"k", "xc"}}), 5);
  EXPECT_EQ(Rpu(d, {{"k", "zz"}}), 1);
  EXPECT_EQ(Rpu(d, {{"k", ""}}), 1);
}

// Verifies upstream's composite-key quirk: a request entry's "key_value" is compared with
// the rule's.
TEST_F(RulesTest, CompositeKeysCompareAsUpstream) {
  const Domain& d = Load(R"(
domain: d
descriptors:
  - key: a
    value: b_c
    rate_limit: {unit: second, requests_per_unit: 7}
  - key: x*
    rate_limit: {unit: second, requests_per_unit: 8}
)");
  EXPECT_EQ(Rpu(d, {{"a", "b_c"}}), 7);
  EXPECT_EQ(Rpu(d, {{"a_b", "c"}}), 7);         // "a_b" + "_" + "c" == "a" + "_" + "b_c"
  EXPECT_EQ(Rpu(d, {{"xyz", "anything"}}), 8);  // a '*' in a key is a wildcard too
  // And the two spellings collide at load, as upstream.
  EXPECT_THAT(ParseError(R"(
domain: d
descriptors:
  - key: a
    value: b_c
  - key: a_b
    value: c
)"),
              HasSubstr("duplicate descriptor composite key 'd.a_b_c'"));
}

// Verifies upstream's TestShadowModeConfig: shadow_mode is per rule.
TEST_F(RulesTest, ShadowMode) {
  const Domain& d = Load(kShadow);
  EXPECT_FALSE(M(d, {{"key1", "value1"}, {"subkey1", "something"}}).rule->shadow_mode);
  EXPECT_TRUE(M(d, {{"key1", "value1"}, {"subkey1", "subvalue1"}}).rule->shadow_mode);
  EXPECT_TRUE(M(d, {{"key2", "something"}}).rule->shadow_mode);
  EXPECT_FALSE(M(d, {{"key2", "value2"}}).rule->shadow_mode);
}

// Verifies `unlimited` and `requests_per_unit: 0` load and match as limits.
TEST_F(RulesTest, UnlimitedAndZero) {
  const Domain& d = Load(R"(
domain: d
descriptors:
  - key: free
    rate_limit:
      unlimited: true
      requests_per_unit: 3
  - key: never
    rate_limit: {unit: HOUR, requests_per_unit: 0}
  - key: bogus_unit_ok_when_unlimited
    rate_limit: {unlimited: true, unit: fortnight}
)");
  Match free = M(d, {{"free", "x"}});
  ASSERT_NE(free.rule, nullptr);
  EXPECT_TRUE(free.rule->rate_limit->unlimited);
  Match never = M(d, {{"never", "x"}});
  ASSERT_NE(never.rule, nullptr);
  EXPECT_EQ(never.rule->rate_limit->requests_per_unit, 0u);
  EXPECT_EQ(never.rule->rate_limit->unit, Unit::kHour);
  EXPECT_FALSE(never.bucket_id.empty());
  EXPECT_NE(M(d, {{"bogus_unit_ok_when_unlimited", ""}}).rule, nullptr);
}

// Verifies upstream's TestShareThreshold: matching values share the pattern's bucket.
TEST_F(RulesTest, ShareThreshold) {
  const Domain& d = Load(kShare);
  auto id = [&](std::vector<std::pair<std::string, std::string>> kv) {
    Match m = M(d, std::move(kv));
    EXPECT_NE(m.rule, nullptr);
    return m.bucket_id;
  };
  EXPECT_EQ(id({{"files", "files/a.pdf"}}), "5:files7:files/*");
  EXPECT_EQ(id({{"files", "files/b.csv"}}), "5:files7:files/*");
  EXPECT_EQ(id({{"nested", "parent"}, {"files", "nested/x"}}),
            "6:nested6:parent5:files8:nested/*");
  EXPECT_EQ(id({{"files", "top/1"}, {"files", "nested/2"}}),
            "5:files5:top/*5:files8:nested/*");
  // Shared at a non-final level, applied with the deeper rule.
  EXPECT_EQ(id({{"route", "api/v1"}, {"method", "GET"}}), "5:route5:api/*6:method3:GET");
  EXPECT_EQ(id({{"service", "svc/a"}, {"endpoint", "/x"}}),
            "7:service5:svc/*8:endpoint2:/x");
  // Mixed: the second wildcard does not share.
  EXPECT_EQ(id({{"path", "path/a"}, {"file", "file/b"}, {"type", "t"}}),
            "4:path6:path/*4:file6:file/b4:type1:t");
  EXPECT_EQ(id({{"user", "user/1"}, {"resource", "res/2"}, {"action", "r"}}),
            "4:user6:user/*8:resource5:res/*6:action1:r");
  // Exact value first: no sharing.
  Match exact = M(d, {{"file", "test1"}});
  EXPECT_EQ(exact.rule->rate_limit->requests_per_unit, 50u);
  EXPECT_EQ(exact.bucket_id, "4:file5:test1");
  EXPECT_EQ(id({{"file", "test2"}}), "4:file5:test*");
  EXPECT_EQ(id({{"midpath", "/api/foo/v1"}}), "7:midpath7:/api*v1");
  EXPECT_EQ(id({{"multiroute", "svcXepYrpc"}}), "10:multiroute10:svc*ep*rpc");
  EXPECT_EQ(id({{"midroute", "/api/v2"}}), "8:midroute7:/api*v2");
  EXPECT_EQ(id({{"tenant", "t1prod"}, {"resource", "res1v2"}}),
            "6:tenant6:t*prod8:resource6:res*v2");
}

// Verifies bucket ids are length-prefixed, so different entries never collide.
TEST_F(RulesTest, BucketIdsAreUnambiguous) {
  const Domain& d = Load(kWildcard);
  EXPECT_EQ(M(d, {{"noVal", "a"}}).bucket_id, "5:noVal1:a");
  std::vector<Entry> a = {{"k:1", "2"}}, b = {{"k", "1:2"}};
  EXPECT_NE(RuleSet::EncodeBucketId(a), RuleSet::EncodeBucketId(b));
  std::string bin("\0\xff", 2);
  std::vector<Entry> c = {{"k", bin}};
  EXPECT_EQ(RuleSet::EncodeBucketId(c), std::string("1:k2:\0\xff", 7));
  EXPECT_TRUE(M(d, {{"nothing", "x"}}).bucket_id.empty());
}

// Verifies `replaces` as upstream: named limits dropped; unlimited never dropped; its
// replaces count.
TEST_F(RulesTest, Replaces) {
  const Domain& d = Load(R"(
domain: d
descriptors:
  - key: a
    rate_limit: {name: A, unit: second, requests_per_unit: 1}
  - key: b
    rate_limit:
      name: B
      unit: second
      requests_per_unit: 2
      replaces: [{name: A}]
  - key: c
    rate_limit:
      unlimited: true
      name: C
      replaces: [{name: B}]
  - key: n
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: u
    rate_limit: {name: A, unlimited: true}
)");
  std::vector<Match> ms = {M(d, {{"a", "1"}}), M(d, {{"b", "1"}}), M(d, {{"n", "1"}})};
  EXPECT_EQ(RuleSet::Replaced(ms), (std::vector<bool>{true, false, false}));
  ms = {M(d, {{"a", "1"}}), M(d, {{"b", "1"}}), M(d, {{"c", "1"}})};
  // B is replaced by the unlimited C; B's own replaces still drop A.
  EXPECT_EQ(RuleSet::Replaced(ms), (std::vector<bool>{true, true, false}));
  ms = {M(d, {{"a", "1"}})};
  EXPECT_EQ(RuleSet::Replaced(ms), (std::vector<bool>{false}));
  ms = {M(d, {{"u", "1"}}), M(d, {{"b", "1"}}), Match{}};
  EXPECT_EQ(RuleSet::Replaced(ms), (std::vector<bool>{false, false, false}));
}

// Verifies every unit, in any case, and the month/year lengths of upstream.
TEST_F(RulesTest, Units) {
  EXPECT_EQ(ParseUnit("second"), Unit::kSecond);
  EXPECT_EQ(ParseUnit("MINUTE"), Unit::kMinute);
  EXPECT_EQ(ParseUnit("Hour"), Unit::kHour);
  EXPECT_EQ(ParseUnit("dAy"), Unit::kDay);
  EXPECT_EQ(ParseUnit("week"), Unit::kWeek);
  EXPECT_EQ(ParseUnit("month"), Unit::kMonth);
  EXPECT_EQ(ParseUnit("YEAR"), Unit::kYear);
  EXPECT_EQ(ParseUnit("\xc5\xbf"
                      "econd"),
            Unit::kSecond);  // Go's ToUpper: long s -> S
  EXPECT_EQ(ParseUnit("unknown"), std::nullopt);
  EXPECT_EQ(ParseUnit(""), std::nullopt);
  EXPECT_EQ(ParseUnit("seconds"), std::nullopt);
  EXPECT_EQ(UnitMs(Unit::kSecond), 1000);
  EXPECT_EQ(UnitMs(Unit::kWeek), 7 * 86'400'000LL);
  EXPECT_EQ(UnitMs(Unit::kMonth), 30 * 86'400'000LL);
  EXPECT_EQ(UnitMs(Unit::kYear), 365 * 86'400'000LL);
}

// Verifies the other upstream valid files load (metadata, merge parts) with YAML 1.1
// scalars.
TEST_F(RulesTest, UpstreamValidFilesLoad) {
  const Domain& m = Load(kMetadata);
  EXPECT_EQ(Rpu(m, {{"key1", "value1"}, {"subkey1", "x"}}), 5);
  EXPECT_EQ(Rpu(m, {{"key2", "x"}}), 20);
  EXPECT_EQ(Rpu(Load(kMerge1), {{"key1", "value1"}}), 10);
  EXPECT_EQ(Rpu(Load(kMerge2), {{"key2", "value2"}}), 20);
  // yaml.v2 scalars: yes/on booleans, 0x / 1_000 integers, numbers as strings.
  const Domain& y = Load(R"(
domain: 42
descriptors:
  - key: 7
    value: true
    shadow_mode: yes
    rate_limit: {unit: Second, requests_per_unit: 0x10}
  - key: k
    detailed_metric: On
    rate_limit: {unit: minute, requests_per_unit: 1_000}
  - key: misplaced
    unit: ignored as upstream does
    domain: also ignored
    rate_limit: {unit: minute, requests_per_unit: 1, key: ignored}
)");
  EXPECT_EQ(y.name, "42");
  Match a = M(y, {{"7", "true"}});
  ASSERT_NE(a.rule, nullptr);
  EXPECT_TRUE(a.rule->shadow_mode);
  EXPECT_EQ(a.rule->rate_limit->requests_per_unit, 16u);
  EXPECT_EQ(Rpu(y, {{"k", ""}}), 1000);
  EXPECT_EQ(Rpu(y, {{"misplaced", ""}}), 1);
}

// Verifies upstream's invalid files are rejected, naming the file, position, path and
// problem.
TEST_F(RulesTest, UpstreamInvalidFilesRejected) {
  // test/config/bad_limit_unit.yaml
  EXPECT_EQ(
      ParseError(R"(domain: test-domain
descriptors:
  - key: key1
    value: value1
    rate_limit:
      unit: foo
      requests_per_unit: 5
)"),
      "bad.yaml:6:13: descriptors[0].rate_limit.unit: invalid rate limit unit 'foo' "
      "(expected second, minute, hour, day, week, month or year)");
  // test/config/bad_yaml.yaml
  // (yaml-cpp reads it as the string "' ", yaml.v2 as a broken document:
  // rejected either way, for not being a map.)
  EXPECT_THAT(ParseError("'''\n"), HasSubstr("bad.yaml:1:1: top level: expected a map"));
  EXPECT_THAT(ParseError("domain: [\n"),
              AllOf(HasSubstr("bad.yaml:"), HasSubstr("not valid YAML")));
  // test/config/duplicate_key.yaml
  EXPECT_EQ(ParseError(R"(domain: test-domain
descriptors:
  - key: key1
    value: value1

  - key: key1
    value: value1
)"),
            "bad.yaml:6:5: descriptors[1]: duplicate descriptor composite key "
            "'test-domain.key1_value1'");
  // test/config/empty_domain.yaml
  EXPECT_THAT(
      ParseError("descriptors:\n"),
      AllOf(HasSubstr("bad.yaml:1:1: domain: config file cannot have empty domain")));
  // test/config/empty_key.yaml
  EXPECT_EQ(ParseError(R"(domain: test-domain
descriptors:
  - value: value1
)"),
            "bad.yaml:3:5: descriptors[0].key: descriptor has empty key");
  // test/config/misspelled_key.yaml
  EXPECT_THAT(
      ParseError(R"(domain: test-domain
descriptors:
  - key: key1
    value: value1
    ratelimit:
      unit: day
      requests_per_unit: 5
)"),
      HasSubstr("bad.yaml:5:5: descriptors[0]: config error, unknown key 'ratelimit'"));
  // test/config/misspelled_key2.yaml
  EXPECT_THAT(ParseError(R"(domain: test-domain
descriptors:
  - key: key1
    value: value1
    rate_limit:
      unit: day
      requestsperunit: 5
)"),
              HasSubstr("bad.yaml:7:7: descriptors[0].rate_limit: config error, unknown "
                        "key 'requestsperunit'"));
  // test/config/non_map_list.yaml
  EXPECT_EQ(ParseError(R"(domain: test-domain
descriptors:
  - a
  - b
  - c
)"),
            "bad.yaml:3:5: descriptors[0]: config error, yaml file contains list of type "
            "other than map: 'a'");
  // test/config/non_string_key.yaml
  EXPECT_EQ(ParseError(R"(0.25: test-domain
descriptors:
  - key: key1
)"),
            "bad.yaml:1:1: top level: config error, key is not of type string: '0.25'");
  // test/config/replaces_empty.yaml
  EXPECT_EQ(
      ParseError(R"(domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit:
          name: self
          replaces:
            - name:
          unit: second
          requests_per_unit: 5
)"),
      "bad.yaml:10:15: descriptors[0].descriptors[0].rate_limit.replaces[0].name: should "
      "not have an empty replaces entry");
  // test/config/replaces_self.yaml
  EXPECT_EQ(ParseError(R"(domain: test-domain
descriptors:
  - key: key1
    value: value1
    descriptors:
      - key: subkey1
        rate_limit:
          name: self
          replaces:
            - name: self
          unit: second
          requests_per_unit: 5
)"),
            "bad.yaml:10:21: descriptors[0].descriptors[0].rate_limit.replaces[0].name: "
            "replaces should not contain name of same descriptor");
  // test/config/unlimited_with_unit.yaml
  EXPECT_EQ(
      ParseError(R"(domain: test-domain
descriptors:
  - key: foo
    rate_limit:
      unlimited: true
      unit: day
      requests_per_unit: 25
)"),
      "bad.yaml:6:13: descriptors[0].rate_limit.unit: should not specify rate limit unit "
      "when unlimited");
}

// Verifies the other rejections upstream makes (share_threshold, types, floats, missing
// unit).
TEST_F(RulesTest, OtherRejections) {
  EXPECT_THAT(
      ParseError(R"(domain: d
descriptors:
  - key: k
    value: v
    share_threshold: true
)"),
      HasSubstr("descriptors[0].share_threshold: share_threshold can only be used "
                "with wildcard values"));
  EXPECT_THAT(ParseError("domain: d\ndescriptors:\n  - key: k\n    value: 1.5\n"),
              HasSubstr("bad.yaml:4:12: descriptors[0].value: error checking config"));
  // Beyond int64 yaml.v2 makes a uint64 or a float: refused by upstream's key check.
  EXPECT_THAT(
      ParseError("domain: d\ndescriptors:\n  - key: k\n    value: 9223372036854775808\n"),
      HasSubstr("descriptors[0].value: error checking config"));
  EXPECT_THAT(ParseError("domain: d\ndescriptors:\n  - key: k\n    value: 08\n"),
              HasSubstr("descriptors[0].value: error checking config"));
  EXPECT_EQ(
      Rpu(Load("domain: d\ndescriptors:\n  - key: k\n    value: 9223372036854775807\n    "
               "rate_limit: {unit: second, requests_per_unit: 017}\n"),
          {{"k", "9223372036854775807"}}),
      15);  // a leading 0 is octal, as in Go
  EXPECT_THAT(ParseError("domain: d\ndescriptors:\n  - key: k\n    shadow_mode: 1\n"),
              HasSubstr("descriptors[0].shadow_mode: expected a boolean"));
  EXPECT_THAT(
      ParseError("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, "
                 "requests_per_unit: -1}\n"),
      HasSubstr(
          "descriptors[0].rate_limit.requests_per_unit: expected an integer between 0 "
          "and 4294967295"));
  EXPECT_THAT(
      ParseError("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, "
                 "requests_per_unit: 4294967296}\n"),
      HasSubstr("requests_per_unit: expected an integer between 0 and 4294967295"));
  EXPECT_THAT(
      ParseError("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, "
                 "requests_per_unit: '5'}\n"),
      HasSubstr("requests_per_unit: expected a non-negative integer"));
  EXPECT_THAT(ParseError("domain: d\ndescriptors:\n  - key: k\n    rate_limit: "
                         "{requests_per_unit: 5}\n"),
              HasSubstr("descriptors[0].rate_limit.unit: invalid rate limit unit ''"));
  EXPECT_THAT(ParseError("domain: d\ndescriptors: x\n"),
              HasSubstr("bad.yaml:2:14: descriptors: expected a list of descriptors"));
  EXPECT_THAT(ParseError("- a\n"), HasSubstr("bad.yaml:1:1: top level: expected a map"));
  EXPECT_THAT(ParseError("domain: d\ndomain: e\n"), HasSubstr("duplicate key 'domain'"));
  EXPECT_THAT(ParseError("domain: d\ndescriptors:\n  - key: k\n    other: [1]\n"),
              HasSubstr("descriptors[0]: config error, unknown key 'other'"));
  EXPECT_THAT(
      ParseError("domain: d\ndescriptors:\n  - key: k\n    unit: [x]\n"),
      HasSubstr("descriptors[0].unit[0]: config error, yaml file contains list of "
                "type other than map"));
  // Neither rate_limit nor descriptors (issue 9's list): refused for a bare key,
  // which could never change a decision; a key with a value stays valid (it
  // exempts the value, as upstream's basic_config.yaml key2/value3 does).
  EXPECT_THAT(
      ParseError("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, "
                 "requests_per_unit: 1}\n    descriptors:\n      - key: sub\n"),
      HasSubstr("bad.yaml:6:14: descriptors[0].descriptors[0]: descriptor has neither "
                "rate_limit nor descriptors"));
  EXPECT_THAT(ParseError("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n"),
              HasSubstr("descriptors[0]: descriptor has neither rate_limit nor"));
  EXPECT_EQ(Rpu(Load("domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: day, "
                     "requests_per_unit: 3}\n  - key: k\n    value: free\n"),
                {{"k", "free"}}),
            -1);
}

// Verifies a domain defined twice (in two files) is rejected, naming both files.
TEST_F(RulesTest, DuplicateDomain) {
  // test/config/basic_config.yaml + duplicate_domain.yaml
  absl::StatusOr<Domain> a = RuleSet::ParseDomain(kBasic, "basic_config.yaml");
  absl::StatusOr<Domain> b = RuleSet::ParseDomain("domain: test-domain\ndescriptors:\n",
                                                  "duplicate_domain.yaml");
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<Domain> v;
  v.push_back(*std::move(a));
  v.push_back(*std::move(b));
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::FromDomains(std::move(v));
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      set.status().message(),
      "duplicate_domain.yaml:1:1: domain: duplicate domain 'test-domain' in config file "
      "(already defined in 'basic_config.yaml')");
}

// Verifies hand-built domains are indexed and checked by FromDomains too.
TEST_F(RulesTest, FromDomainsBuildsIndexes) {
  Domain d;
  d.name = "x";
  d.source = "built";
  Rule r;
  r.key = "k";
  r.value = "v*";
  r.rate_limit.emplace();
  r.rate_limit->requests_per_unit = 3;
  d.descriptors.push_back(r);
  std::vector<Domain> v = {d};
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::FromDomains(v);
  ASSERT_TRUE(set.ok()) << set.status();
  const Domain* found = (*set)->FindDomain("x");
  ASSERT_NE(found, nullptr);
  EXPECT_EQ((*set)->FindDomain("y"), nullptr);
  EXPECT_EQ(Rpu(*found, {{"k", "v1"}}), 3);
  d.descriptors.push_back(r);
  v = {d};
  EXPECT_THAT(
      RuleSet::FromDomains(v).status().message(),
      HasSubstr(
          "built:1:1: descriptors[1]: duplicate descriptor composite key 'x.k_v*'"));
}

// Verifies matching many entries against many wildcards stays bounded (no backtracking).
TEST_F(RulesTest, MatchingIsBounded) {
  std::string yaml = "domain: d\ndescriptors:\n";
  for (int i = 0; i < 200; ++i) {
    yaml += "  - key: k\n    value: \"a*b*c*d" + std::to_string(i) + "\"\n";
    yaml += "    rate_limit: {unit: second, requests_per_unit: 1}\n";
  }
  const Domain& d = Load(yaml.c_str());
  std::string value(4096, 'a');
  std::vector<std::pair<std::string, std::string>> kv(1000, {"k", value});
  EXPECT_EQ(Rpu(d, kv), -1);
  EXPECT_EQ(Rpu(d, {{"k", value + "bcd199"}}), 1);
}

class LoadDirsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/envoy_rules_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::string cmd = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(std::system(cmd.c_str()), 0);
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ + "/" + name) << text;
  }
  std::string dir_;
};

// Verifies the directory rules: *.yaml/*.yml only, dot names skipped, symlinks followed,
// name order.
TEST_F(LoadDirsTest, LoadsConfigMapLayout) {
  // A ConfigMap mount: ..data -> ..2024_x/, and top-level symlinks into ..data.
  ASSERT_EQ(mkdir((dir_ + "/..2024_x").c_str(), 0755), 0);
  Write("..2024_x/b.yaml", "domain: b\ndescriptors:\n");
  Write("..2024_x/a.yml", "domain: a\ndescriptors:\n");
  ASSERT_EQ(symlink("..2024_x", (dir_ + "/..data").c_str()), 0);
  ASSERT_EQ(symlink("..data/b.yaml", (dir_ + "/b.yaml").c_str()), 0);
  ASSERT_EQ(symlink("..data/a.yml", (dir_ + "/a.yml").c_str()), 0);
  Write(".hidden.yaml", "not: valid");
  Write("README.txt", "not yaml");
  ASSERT_EQ(mkdir((dir_ + "/sub.yaml").c_str(), 0755), 0);  // a directory: skipped
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::LoadDirs({dir_});
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ((*set)->domains().size(), 2u);
  EXPECT_EQ((*set)->domains()[0].name, "a");
  EXPECT_EQ((*set)->domains()[1].name, "b");
  EXPECT_EQ((*set)->domains()[1].source, dir_ + "/b.yaml");
}

// Verifies load errors: a bad file is named; a missing dir is kNotFound; a domain twice
// across files.
TEST_F(LoadDirsTest, Errors) {
  Write("a.yaml",
        "domain: x\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight}\n");
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::LoadDirs({dir_});
  ASSERT_FALSE(set.ok());
  EXPECT_THAT(
      set.status().message(),
      HasSubstr(dir_ + "/a.yaml:4:24: descriptors[0].rate_limit.unit: invalid rate "
                       "limit unit 'fortnight'"));
  Write("a.yaml", "domain: x\n");
  Write("b.yaml", "\n\ndomain: x\n");
  set = RuleSet::LoadDirs({dir_});
  ASSERT_FALSE(set.ok());
  EXPECT_EQ(set.status().message(), dir_ +
                                        "/b.yaml:3:1: domain: duplicate domain 'x' in "
                                        "config file (already defined in '" +
                                        dir_ + "/a.yaml')");
  set = RuleSet::LoadDirs({dir_ + "/missing"});
  EXPECT_EQ(set.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(set.status().message(), HasSubstr("missing"));
  Write("b.yaml", std::string(17 << 20, '#'));
  set = RuleSet::LoadDirs({dir_});
  EXPECT_THAT(set.status().message(), HasSubstr("larger than 16777216 bytes"));
}

// Verifies DigestDirs matches the loaded set's digest and changes exactly when a loaded
// file does.
TEST_F(LoadDirsTest, DigestFollowsTheLoadedFiles) {
  Write("a.yaml", "domain: a\n");
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::LoadDirs({dir_});
  ASSERT_TRUE(set.ok()) << set.status();
  const std::string loaded = (*set)->files_digest();
  EXPECT_FALSE(loaded.empty());
  EXPECT_EQ(*RuleSet::DigestDirs({dir_}), loaded);
  Write(".b.yaml", "ignored");
  Write("notes.txt", "ignored");
  EXPECT_EQ(*RuleSet::DigestDirs({dir_}), loaded);
  Write("a.yaml", "domain: b\n");
  const std::string changed = *RuleSet::DigestDirs({dir_});
  EXPECT_NE(changed, loaded);
  Write("c.yml", "domain: c\n");
  EXPECT_NE(*RuleSet::DigestDirs({dir_}), changed);
  EXPECT_EQ(RuleSet::DigestDirs({dir_ + "/missing"}).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(RuleSet::Empty()->files_digest().empty());
}

}  // namespace
}  // namespace traffik::envoy
