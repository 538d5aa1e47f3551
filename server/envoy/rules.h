#pragma once

// envoyproxy/ratelimit's configuration files (one `domain` per YAML file,
// nested `descriptors`) and its matching rules, as Traffik loads and applies
// them for envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit.
//
// Pure logic: no gRPC, no backends. The service (service/envoy_service.h)
// turns a Match into a token bucket on the domain's tenant.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace traffik::envoy {

namespace internal {

// A lookup key of one level's exact index: upstream's composite "key" or
// "key_value", given as its pieces so a request entry is looked up without
// building the string.
struct CompositeView {
  absl::string_view key;
  absl::string_view value;
  bool with_value = true;  // "key" + '_' + "value"; false: "key" alone
};

// Hash and equality over the composite's bytes (a std::string key equals a
// CompositeView spelling the same bytes).
struct CompositeHash {
  using is_transparent = void;
  size_t operator()(absl::string_view s) const;
  size_t operator()(const CompositeView& c) const;
};
struct CompositeEq {
  using is_transparent = void;
  bool operator()(absl::string_view a, absl::string_view b) const { return a == b; }
  bool operator()(absl::string_view a, const CompositeView& b) const;
  bool operator()(const CompositeView& a, absl::string_view b) const {
    return (*this)(b, a);
  }
};

// A child whose composite holds a '*', with the composite split on '*'.
struct WildcardEntry {
  uint32_t child = 0;
  std::vector<std::string> parts;
};

// The index of one level's children (built by ParseDomain / FromDomains):
// each child's composite -> its position, and the wildcard children in file
// order.
struct LevelIndex {
  absl::flat_hash_map<std::string, uint32_t, CompositeHash, CompositeEq> exact;
  std::vector<WildcardEntry> wildcards;
};

}  // namespace internal

// envoyproxy/ratelimit's units. A month is 30 days and a year 365 days, as
// upstream.
enum class Unit { kSecond, kMinute, kHour, kDay, kWeek, kMonth, kYear };

// Milliseconds in one `unit`.
int64_t UnitMs(Unit unit);

// Parses a unit as written in a config file ("second" ... "year", any case).
std::optional<Unit> ParseUnit(std::string_view text);

// A `rate_limit:` block.
struct RateLimit {
  uint32_t requests_per_unit = 0;  // 0: every hit is refused
  Unit unit = Unit::kSecond;
  bool unlimited = false;             // `unlimited: true`: always OK
  std::string name;                   // `name`, may be empty
  std::vector<std::string> replaces;  // names from `replaces: [{name}]`
};

// One node of a domain's descriptor tree (a `descriptors:` entry).
struct Rule {
  std::string key;
  std::string value;  // "" when the entry has no value (bare key)
  // The node's config path below its domain, bounded by the config: the
  // entries from the root joined by '.', each "key" or "key_value" with the
  // value as written in the file (a wildcard stays "*"), e.g.
  // "remote_address" or "database_users.message_type_*". Used as the metric
  // `rule` label and in bucket keys.
  std::string path;
  std::optional<RateLimit> rate_limit;
  bool shadow_mode = false;
  bool detailed_metric = false;
  bool share_threshold = false;  // only meaningful when `value` has a '*'
  bool quota_mode = false;       // accepted, no effect
  bool value_to_metric = false;  // accepted (upstream: a stats-name option), no effect
  std::vector<Rule> children;    // `descriptors:` below this one

  // Upstream's composite key of this node: "key", or "key_value" when the
  // value is not empty. Matching compares request entries' "key_value"
  // against it (see RuleSet::MatchDescriptor).
  std::string composite;
  // Where the node starts in its file (1-based; 0 when built by hand).
  int line = 0;
  int column = 0;
  // Index of `children` (built by ParseDomain / FromDomains).
  internal::LevelIndex index;
};

// One file's `domain` and its top-level descriptors.
struct Domain {
  std::string name;
  std::string source;  // the file it came from (for messages)
  std::vector<Rule> descriptors;
  // Where `domain:` is written (1-based; 0 when built by hand).
  int line = 0;
  int column = 0;
  // Index of `descriptors` (built by ParseDomain / FromDomains).
  internal::LevelIndex index;
};

// One request descriptor's entry, as Envoy sends it (views into the request).
struct Entry {
  absl::string_view key;
  absl::string_view value;
};

// What a request descriptor matched.
struct Match {
  // The rule whose `rate_limit` applies (the node matched at the
  // descriptor's last entry, holding a rate_limit), or nullptr: no limit
  // applies (answer OK, no current_limit, nothing taken).
  const Rule* rule = nullptr;
  // The bucket's identity within the rule: the descriptor's entries (key and
  // value of each), where a value matched by a wildcard of a rule with
  // `share_threshold: true` is replaced by that wildcard pattern (so every
  // matching value shares one bucket). Encoded unambiguously
  // (length-prefixed) and binary-safe; empty when `rule` is nullptr.
  std::string bucket_id;
};

// Every configured domain, immutable once built.
class RuleSet {
 public:
  // Loads every regular file ending in ".yaml" or ".yml" directly in each of
  // `dirs` (names starting with '.' skipped, as in a Kubernetes ConfigMap
  // mount), in name order. Errors (kInvalidArgument, kNotFound for a missing
  // directory) name the file, the descriptor path and the problem, e.g.
  // "/etc/ratelimit/config/a.yaml:7:5: descriptors[0].descriptors[1].rate_limit.unit:
  // unknown unit 'fortnight'". A domain defined in two files is an error.
  static absl::StatusOr<std::shared_ptr<const RuleSet>> LoadDirs(
      const std::vector<std::string>& dirs);

  // Parses one file's text (for tests and fuzzing); `source` names it in
  // messages.
  static absl::StatusOr<Domain> ParseDomain(std::string_view yaml_text,
                                            std::string_view source);

  // Builds a set from parsed domains; a duplicate domain is kInvalidArgument.
  static absl::StatusOr<std::shared_ptr<const RuleSet>> FromDomains(
      std::vector<Domain> domains);

  // A set without domains (shared; every domain is unknown).
  static std::shared_ptr<const RuleSet> Empty();

  // The domain called `name`, or nullptr (an unknown domain answers OK).
  const Domain* FindDomain(absl::string_view name) const;

  const std::vector<Domain>& domains() const { return domains_; }

  // Matches one descriptor exactly as envoyproxy/ratelimit does: at each
  // level the exact key+value first, then the first matching wildcard value,
  // then the bare key; a limit applies only at the descriptor's last entry.
  static Match MatchDescriptor(const Domain& domain, absl::Span<const Entry> entries);

  // `replaces`: given the matches of all descriptors of one request, marks
  // (true) those whose rule's rate_limit `name` is listed in the `replaces`
  // of another match of the same request; those are not applied (answered
  // OK with no current_limit, nothing taken), as upstream. As upstream: an
  // `unlimited` match is never marked (it stays unlimited) but its own
  // `replaces` count; a replaced match's own `replaces` still count; a rule
  // without a name is never replaced. A descriptor answered by its `limit`
  // override has no name and no replaces upstream: pass Match{} for it.
  static std::vector<bool> Replaced(absl::Span<const Match> matches);

  // The bucket_id encoding of `entries` with their own values (what a match
  // without share_threshold gives): for each entry "<len>:<key><len>:<value>"
  // with decimal byte lengths. For a descriptor's `limit` override, which
  // applies without a matching rule.
  static std::string EncodeBucketId(absl::Span<const Entry> entries);

 private:
  std::vector<Domain> domains_;
  absl::flat_hash_map<std::string, size_t> by_name_;
};

}  // namespace traffik::envoy
