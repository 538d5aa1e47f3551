// examples/envoy: the descriptors Envoy builds from envoy.yaml's rate_limits
// actions match the intended rules of examples/envoy/ratelimit, and
// traffik.yaml passes `traffikd --check-config`.

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "e2e/traffikd_process.h"
#include "envoy/rules.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "yaml-cpp/yaml.h"

namespace traffik::envoy {
namespace {

const std::string kExampleDir = std::string(TRAFFIK_SOURCE_DIR) + "/examples/envoy";

// A downstream request, as the rate-limit actions see it.
struct Request {
  std::string remote_address;
  std::map<std::string, std::string> headers;  // lower-case names, incl. :method, :path
};

using Descriptor = std::vector<std::pair<std::string, std::string>>;

// Envoy's mapping of one `rate_limits` entry's actions to a descriptor, for
// the action types the example uses (envoy.config.route.v3.RateLimit.Action):
// each action adds one entry, or the descriptor is not sent at all (a
// missing header, a header_value_match that does not match).
std::optional<Descriptor> Apply(const YAML::Node& actions, const Request& req) {
  Descriptor d;
  for (const YAML::Node& action : actions) {
    if (action["remote_address"]) {
      d.emplace_back("remote_address", req.remote_address);
    } else if (const YAML::Node g = action["generic_key"]) {
      d.emplace_back(
          g["descriptor_key"] ? g["descriptor_key"].as<std::string>() : "generic_key",
          g["descriptor_value"].as<std::string>());
    } else if (const YAML::Node h = action["request_headers"]) {
      auto it = req.headers.find(h["header_name"].as<std::string>());
      if (it == req.headers.end()) return std::nullopt;
      d.emplace_back(h["descriptor_key"].as<std::string>(), it->second);
    } else if (const YAML::Node m = action["header_value_match"]) {
      bool matches = true;
      for (const YAML::Node& hm : m["headers"]) {
        auto it = req.headers.find(hm["name"].as<std::string>());
        matches = matches && it != req.headers.end() &&
                  it->second == hm["string_match"]["exact"].as<std::string>();
      }
      bool expect = m["expect_match"] ? m["expect_match"].as<bool>() : true;
      if (matches != expect) return std::nullopt;
      d.emplace_back(
          m["descriptor_key"] ? m["descriptor_key"].as<std::string>() : "header_match",
          m["descriptor_value"].as<std::string>());
    } else {
      ADD_FAILURE() << "action not modelled by this test: " << YAML::Dump(action);
      return std::nullopt;
    }
  }
  return d;
}

class EnvoyExampleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    envoy_ = YAML::LoadFile(kExampleDir + "/envoy.yaml");
    const YAML::Node hcm = envoy_["static_resources"]["listeners"][0]["filter_chains"][0]
                                 ["filters"][0]["typed_config"];
    for (const YAML::Node& f : hcm["http_filters"]) {
      if (f["name"].as<std::string>() == "envoy.filters.http.ratelimit") {
        domain_ = f["typed_config"]["domain"].as<std::string>();
      }
    }
    routes_ = hcm["route_config"]["virtual_hosts"][0]["routes"];
    absl::StatusOr<std::shared_ptr<const RuleSet>> rules =
        RuleSet::LoadDirs({kExampleDir + "/ratelimit"});
    ASSERT_TRUE(rules.ok()) << rules.status();
    rules_ = *rules;
  }

  // The descriptors Envoy sends for `req` (first route whose prefix matches).
  std::vector<Descriptor> Descriptors(const Request& req) const {
    std::vector<Descriptor> out;
    const std::string& path = req.headers.at(":path");
    for (const YAML::Node& route : routes_) {
      if (path.rfind(route["match"]["prefix"].as<std::string>(), 0) != 0) continue;
      for (const YAML::Node& rl : route["route"]["rate_limits"]) {
        if (std::optional<Descriptor> d = Apply(rl["actions"], req)) out.push_back(*d);
      }
      break;
    }
    return out;
  }

  // The matched rule's path per descriptor ("" = no limit applies).
  std::vector<std::string> RulePaths(const Request& req) const {
    const Domain* domain = rules_->FindDomain(domain_);
    EXPECT_NE(domain, nullptr) << domain_;
    std::vector<std::string> out;
    if (domain == nullptr) return out;
    for (const Descriptor& d : Descriptors(req)) {
      std::vector<Entry> entries;
      for (const auto& [k, v] : d) entries.push_back({k, v});
      Match m = RuleSet::MatchDescriptor(*domain, entries);
      out.push_back(m.rule == nullptr ? "" : m.rule->path);
    }
    return out;
  }

  Match MatchOf(const Descriptor& d) const {
    std::vector<Entry> entries;
    for (const auto& [k, v] : d) entries.push_back({k, v});
    return RuleSet::MatchDescriptor(*rules_->FindDomain(domain_), entries);
  }

  YAML::Node envoy_;
  YAML::Node routes_;
  std::string domain_;
  std::shared_ptr<const RuleSet> rules_;
};

// Verifies envoy.yaml points the rate-limit filter at the traffik cluster over HTTP/2.
TEST_F(EnvoyExampleTest, FilterTalksHttp2ToTraffik) {
  EXPECT_EQ(domain_, "edge");
  bool found = false;
  for (const YAML::Node& c : envoy_["static_resources"]["clusters"]) {
    if (c["name"].as<std::string>() != "traffik") continue;
    found = true;
    EXPECT_TRUE(c["typed_extension_protocol_options"]
                 ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
                 ["explicit_http_config"]["http2_protocol_options"]);
  }
  EXPECT_TRUE(found);
}

// Verifies a GET with an API key gets the per-address and per-key limits, and no others.
TEST_F(EnvoyExampleTest, GetWithApiKey) {
  Request req{"10.0.0.1",
              {{":method", "GET"}, {":path", "/api/users"}, {"x-api-key", "k1"}}};
  EXPECT_EQ(Descriptors(req),
            (std::vector<Descriptor>{{{"remote_address", "10.0.0.1"}},
                                     {{"generic_key", "api"}, {"api_key", "k1"}},
                                     {{"path", "/api/users"}}}));
  EXPECT_EQ(RulePaths(req),
            (std::vector<std::string>{"remote_address", "generic_key_api.api_key", ""}));
}

// Verifies the trusted partner's key matches its no-limit rule, not the per-key limit.
TEST_F(EnvoyExampleTest, TrustedPartnerKeyIsNotLimited) {
  Request req{"10.0.0.1",
              {{":method", "GET"},
               {":path", "/api/users"},
               {"x-api-key", "trusted-partner-key"}}};
  EXPECT_EQ(RulePaths(req), (std::vector<std::string>{"remote_address", "", ""}));
}

// Verifies a POST to a report gets the write limit and the shared reports bucket.
TEST_F(EnvoyExampleTest, PostToReports) {
  Request req{"10.0.0.2", {{":method", "POST"}, {":path", "/api/reports/q3"}}};
  EXPECT_EQ(RulePaths(req), (std::vector<std::string>{"remote_address",
                                                      "header_match_post.remote_address",
                                                      "path_/api/reports/*"}));
  std::vector<Descriptor> d = Descriptors(req);
  ASSERT_EQ(d.size(), 3u);
  EXPECT_EQ(MatchOf(d[1]).rule->rate_limit->name, "writes");
  // Every report path shares one bucket (share_threshold).
  Match q3 = MatchOf({{"path", "/api/reports/q3"}});
  Match q4 = MatchOf({{"path", "/api/reports/q4?format=csv"}});
  EXPECT_EQ(q3.bucket_id, q4.bucket_id);
  EXPECT_EQ(q3.rule->rate_limit->requests_per_unit, 30u);
}

// Verifies a route without rate_limits sends no descriptors.
TEST_F(EnvoyExampleTest, OtherRoutesAreNotLimited) {
  EXPECT_TRUE(
      Descriptors({"10.0.0.3", {{":method", "GET"}, {":path", "/index.html"}}}).empty());
}

// Verifies `traffikd --check-config` accepts examples/envoy/traffik.yaml (rule files
// included).
TEST(EnvoyExampleCheckConfig, TraffikYamlPasses) {
  const e2e::RunResult result =
      e2e::RunTraffikd({"--check-config", "--config", kExampleDir + "/traffik.yaml"});
  EXPECT_EQ(result.exit_code, 0) << result.output;
}

}  // namespace
}  // namespace traffik::envoy
