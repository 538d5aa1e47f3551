#include "backend/registry.h"

#include <algorithm>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace traffik {
namespace {

// The registry key of a `backend:` value: the lower-cased scheme of
// "scheme://...", else the whole value (matched exactly).
std::string SchemeOf(std::string_view url) {
  const size_t sep = url.find("://");
  if (sep == std::string_view::npos) return std::string(url);
  return absl::AsciiStrToLower(absl::string_view(url.data(), sep));
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

BackendPartition* BackendFactory::Attach(const std::shared_ptr<Backend>&,
                                         const std::string&, const TenantShare&,
                                         const BackendContext&) const {
  return nullptr;
}
void BackendFactory::Detach(Backend&, const std::string&) const {}
void BackendFactory::OnReload(Backend&) const {}

BackendRegistry& BackendRegistry::Global() {
  static BackendRegistry* registry = new BackendRegistry();
  return *registry;
}

void BackendRegistry::Register(std::shared_ptr<const BackendFactory> factory) {
  MutexLock lock(&mu_);
  bool added = false;
  for (const std::string& scheme : factory->Schemes()) {
    added = by_scheme_.emplace(scheme, factory.get()).second || added;
  }
  if (added) factories_.push_back(std::move(factory));
}

const BackendFactory* BackendRegistry::Find(std::string_view url) const {
  MutexLock lock(&mu_);
  auto it = by_scheme_.find(SchemeOf(url));
  return it == by_scheme_.end() ? nullptr : it->second;
}

const BackendFactory* BackendRegistry::FindBySettingsKey(std::string_view key) const {
  MutexLock lock(&mu_);
  for (const auto& f : factories_) {
    if (!key.empty() && f->SettingsKey() == key) return f.get();
  }
  return nullptr;
}

std::vector<std::string> BackendRegistry::Forms() const {
  MutexLock lock(&mu_);
  std::vector<std::string> forms;
  for (const auto& f : factories_) {
    for (std::string& form : f->Forms()) forms.push_back(std::move(form));
  }
  return forms;
}

std::vector<std::string> BackendRegistry::SettingsKeys() const {
  MutexLock lock(&mu_);
  std::vector<std::string> keys;
  for (const auto& f : factories_) {
    std::string key = f->SettingsKey();
    if (!key.empty() && !Contains(keys, key)) keys.push_back(std::move(key));
  }
  return keys;
}

std::string MaskUrlPassword(std::string_view s) {
  size_t sep = s.find("://");
  if (sep == std::string_view::npos) return std::string(s);
  size_t start = sep + 3;
  size_t at = s.rfind('@');
  if (at == std::string_view::npos || at < start) return std::string(s);
  std::string_view userinfo = s.substr(start, at - start);
  size_t colon = userinfo.find(':');
  size_t hide_from = colon == std::string_view::npos ? start : start + colon + 1;
  return absl::StrCat(absl::string_view(s.data(), hide_from), "***",
                      absl::string_view(s.data() + at, s.size() - at));
}

BackendPool::~BackendPool() {
  live_.clear();
  previous_.clear();
  retired_.clear();
}

absl::StatusOr<std::vector<BackendPool::Lease>> BackendPool::Acquire(
    absl::Span<const Request> requests, const YamlReader& reader) {
  DestroyUnused();
  absl::flat_hash_map<std::string, Live> next;
  std::vector<std::string> keys;
  keys.reserve(requests.size());
  std::vector<Lease> leases(requests.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    const Request& request = requests[i];
    const BackendFactory* factory = registry_.Find(request.spec.url);
    if (factory == nullptr) {
      return reader.Error(
          request.spec.url_node, request.spec.url_path,
          absl::StrCat("unknown backend ",
                       QuoteYamlValue(MaskUrlPassword(request.spec.url))));
    }
    absl::StatusOr<std::unique_ptr<BackendSettings>> settings =
        factory->Parse(request.spec, reader);
    if (!settings.ok()) return settings.status();
    std::string key =
        absl::StrCat(SchemeOf(request.spec.url), "\n", (*settings)->InstanceKey());
    auto it = next.find(key);
    if (it == next.end()) {
      Live live;
      live.factory = factory;
      if (auto old = live_.find(key); old != live_.end()) {
        live.backend = old->second.backend;
        leases[i].reused = true;
      } else {
        absl::StatusOr<std::shared_ptr<Backend>> backend =
            factory->Create(**settings, context_);
        if (!backend.ok()) {
          return absl::Status(backend.status().code(),
                              absl::StrCat("tenant ", QuoteYamlValue(request.tenant),
                                           ": ", backend.status().message()));
        }
        live.backend = *std::move(backend);
      }
      it = next.emplace(key, std::move(live)).first;
    } else {
      leases[i].reused = live_.contains(key);
    }
    it->second.tenants.push_back(request.tenant);
    leases[i].backend = it->second.backend;
    keys.push_back(std::move(key));
  }
  // Everything is built: now touch live state.
  for (auto& [key, live] : next) {
    if (live_.contains(key)) live.factory->OnReload(*live.backend);
  }
  for (size_t i = 0; i < requests.size(); ++i) {
    Live& live = next.at(keys[i]);
    leases[i].partition = live.factory->Attach(live.backend, requests[i].tenant,
                                               requests[i].share, context_);
  }
  previous_ = std::move(live_);
  live_ = std::move(next);
  return leases;
}

void BackendPool::Release() {
  for (auto& [key, old] : previous_) {
    auto now = live_.find(key);
    for (const std::string& tenant : old.tenants) {
      if (now == live_.end() || !Contains(now->second.tenants, tenant)) {
        old.factory->Detach(*old.backend, tenant);
      }
    }
    if (now == live_.end()) retired_.push_back(std::move(old.backend));
  }
  previous_.clear();
  DestroyUnused();
}

void BackendPool::Abandon() {
  live_ = std::move(previous_);
  previous_.clear();
}

void BackendPool::DestroyUnused() {
  // use_count() == 1: only this pool holds it; no snapshot (and so no call
  // in flight) can reach it any more, so destroying it here is safe.
  retired_.erase(std::remove_if(retired_.begin(), retired_.end(),
                                [](const std::shared_ptr<Backend>& b) {
                                  return b.use_count() == 1;
                                }),
                 retired_.end());
}

}  // namespace traffik
