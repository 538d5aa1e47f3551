// Fuzz target: envoyproxy/ratelimit config files (envoy/rules.h) and the
// matching of request descriptors against them. The input is a rule file,
// then "\n===\n", then one descriptor a line as "key=value|key=value...".
// A rejected file must be kInvalidArgument; an accepted one must hold the
// invariants RuleSet promises, and matching any descriptor must be total.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "envoy/rules.h"

namespace {

using traffik::envoy::Entry;
using traffik::envoy::Match;
using traffik::envoy::Rule;
using traffik::envoy::RuleSet;

void CheckRules(const std::vector<Rule>& rules) {
  for (const Rule& r : rules) {
    if (r.key.empty() || r.composite.empty() || r.path.empty()) std::abort();
    CheckRules(r.children);
  }
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  while (true) {
    size_t at = s.find(sep);
    out.push_back(s.substr(0, at));
    if (at == std::string_view::npos) return out;
    s.remove_prefix(at + 1);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const size_t sep = in.find("\n===\n");
  const std::string_view yaml = in.substr(0, sep);
  const std::string_view descriptors =
      sep == std::string_view::npos ? std::string_view() : in.substr(sep + 5);

  absl::StatusOr<traffik::envoy::Domain> domain = RuleSet::ParseDomain(yaml, "fuzz.yaml");
  if (!domain.ok()) {
    if (domain.status().code() != absl::StatusCode::kInvalidArgument) std::abort();
    return 0;
  }
  if (domain->name.empty()) std::abort();
  std::vector<traffik::envoy::Domain> domains;
  domains.push_back(*std::move(domain));
  absl::StatusOr<std::shared_ptr<const RuleSet>> set = RuleSet::FromDomains(domains);
  if (!set.ok() || (*set)->domains().size() != 1) std::abort();
  const traffik::envoy::Domain& d = (*set)->domains()[0];
  if ((*set)->FindDomain(d.name) != &d) std::abort();
  CheckRules(d.descriptors);

  std::vector<Match> matches;
  for (std::string_view line : Split(descriptors, '\n')) {
    std::vector<Entry> entries;
    for (std::string_view e : Split(line, '|')) {
      const size_t eq = e.find('=');
      const std::string_view key = e.substr(0, eq);
      const std::string_view value =
          eq == std::string_view::npos ? std::string_view() : e.substr(eq + 1);
      entries.push_back({absl::string_view(key.data(), key.size()),
                         absl::string_view(value.data(), value.size())});
    }
    Match m = RuleSet::MatchDescriptor(d, entries);
    if ((m.rule == nullptr) != m.bucket_id.empty()) std::abort();
    if (m.rule != nullptr && !m.rule->rate_limit) std::abort();
    matches.push_back(std::move(m));
  }
  if (RuleSet::Replaced(matches).size() != matches.size()) std::abort();
  return 0;
}
