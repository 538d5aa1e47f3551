#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "backend/backend.h"
#include "base/mutex.h"
#include "clock/clock.h"
#include "yaml-cpp/yaml.h"
#include "yaml/yaml_reader.h"

namespace traffik {

class Metrics;

// One tenant's backend as written in the configuration: its URL and its raw
// settings node, which only the backend's factory understands.
struct BackendSpec {
  std::string url;       // `backend:` as written (may hold a password: never log it)
  YAML::Node url_node;   // where `backend:` is written (null node: not written)
  std::string url_path;  // "tenants[2].backend", for errors
  // The tenant's settings map for this kind of backend (`redis:`), as
  // written, when `has_settings`.
  bool has_settings = false;
  YAML::Node settings;
  std::string settings_path;     // "tenants[2].redis"
  YAML::Mark settings_key_mark;  // where the settings key is written
};

// A backend's parsed settings. Comparable through InstanceKey.
class BackendSettings {
 public:
  virtual ~BackendSettings() = default;
  // For logs, metrics and error messages ("memory", "redis://host:6379/0"):
  // never holds a secret.
  virtual std::string Name() const = 0;
  // Tenants whose settings have equal keys share one backend instance, and a
  // reload keeps a live backend whose key did not change (its state and
  // connections stay). May hold secrets: never log it.
  virtual std::string InstanceKey() const = 0;
};

// The budget of the in-process store (the configuration's `memory:`
// section), for the factory whose backend keeps its buckets in this process.
struct InProcessBudget {
  uint64_t max_bytes = uint64_t{256} << 20;
  uint64_t max_buckets = 1'000'000;
  int64_t sweep_interval_ms = 10'000;
};

// A tenant's share of a backend that partitions its store by tenant (the
// in-process one); other backends ignore it.
struct TenantShare {
  uint64_t max_bytes = 0;
  uint64_t max_buckets = 0;
};

// What a factory may use besides a tenant's settings.
struct BackendContext {
  const Clock* clock = nullptr;  // not owned; outlives every backend
  InProcessBudget in_process;
  Metrics* metrics = nullptr;  // not owned, may be null: where gauges report
};

// Builds the backends of some URL schemes. One per backend, registered once
// (RegisterBuiltinBackends in app/). Implementations are stateless and
// thread-safe.
class BackendFactory {
 public:
  virtual ~BackendFactory() = default;

  // The URL schemes it serves, lower case: "redis" for "redis://...". A
  // backend written without "://" (e.g. "memory") is its own scheme and is
  // matched exactly; a "scheme://" is matched case-insensitively.
  virtual std::vector<std::string> Schemes() const = 0;
  // How the accepted forms are shown in an "unknown backend" error
  // ("memory", "redis://...").
  virtual std::vector<std::string> Forms() const = 0;
  // The tenant key holding this backend's settings map ("redis"), or "" when
  // it takes none.
  virtual std::string SettingsKey() const { return ""; }
  // The backend's name in messages ("Redis": "only for a Redis backend").
  virtual std::string Kind() const = 0;

  // Validates the URL and the settings node. Errors are kInvalidArgument in
  // the form "<file>:<line>:<col>: <path>: <problem>" (built with `reader`),
  // with secrets masked.
  virtual absl::StatusOr<std::unique_ptr<BackendSettings>> Parse(
      const BackendSpec& spec, const YamlReader& reader) const = 0;

  // Builds a backend from settings this factory parsed.
  virtual absl::StatusOr<std::shared_ptr<Backend>> Create(
      const BackendSettings& settings, const BackendContext& context) const = 0;

  // The partition of `tenant` on `backend` (created, or its share updated),
  // or nullptr for a backend without partitions (the default).
  virtual BackendPartition* Attach(const std::shared_ptr<Backend>& backend,
                                   const std::string& tenant, const TenantShare& share,
                                   const BackendContext& context) const;
  // Forgets `tenant`'s partition on `backend` and drops its buckets (the
  // default does nothing: such a backend's state expires on its own).
  virtual void Detach(Backend& backend, const std::string& tenant) const;
  // Called on each live backend that a reload keeps, before the new
  // configuration serves (the default does nothing).
  virtual void OnReload(Backend& backend) const;
};

// The factories by scheme. Registration happens before any parse; reads are
// thread-safe afterwards.
class BackendRegistry {
 public:
  // The process' registry, where RegisterBuiltinBackends registers.
  static BackendRegistry& Global();

  // Registers `factory` for its schemes; a scheme registered twice keeps the
  // first factory (so registering the built-ins twice is harmless).
  void Register(std::shared_ptr<const BackendFactory> factory);

  // The factory for a `backend:` value, or nullptr.
  const BackendFactory* Find(std::string_view url) const;

  // The factory whose SettingsKey() is `key`, or nullptr.
  const BackendFactory* FindBySettingsKey(std::string_view key) const;

  // Every registered factory's Forms(), in registration order.
  std::vector<std::string> Forms() const;
  // Every registered factory's SettingsKey() (non-empty ones), in order.
  std::vector<std::string> SettingsKeys() const;

 private:
  mutable Mutex mu_;
  std::vector<std::shared_ptr<const BackendFactory>> factories_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, const BackendFactory*> by_scheme_ ABSL_GUARDED_BY(mu_);
};

// Hides the password of "scheme://user:password@host..." (and the whole
// userinfo of "scheme://x@host", where x may be a password) for messages.
std::string MaskUrlPassword(std::string_view url);

// The live backends of a server, by InstanceKey, reused across reloads.
//
// A reload calls Acquire with the new configuration's tenants: a tenant whose
// backend settings are unchanged gets the same live backend (same state, same
// connections); new settings get a new backend; a tenant whose settings
// changed, or that moved to another backend, gets another instance and starts
// fresh there. After the new snapshot serves, Release forgets the tenants
// that are gone (their partitions are detached: their buckets dropped) and
// retires the backends no tenant uses; a retired backend is destroyed once no
// snapshot holds it any more (by the next Acquire/Release, or the pool's
// destructor), never from a backend's own I/O thread.
//
// Not thread-safe: one caller (startup, then the reloader) at a time.
class BackendPool {
 public:
  struct Request {
    std::string tenant;  // configured name
    BackendSpec spec;
    TenantShare share;
  };
  struct Lease {
    std::shared_ptr<Backend> backend;
    BackendPartition* partition = nullptr;
    bool reused = false;  // the backend was live before this Acquire
  };

  BackendPool(const BackendRegistry& registry, BackendContext context)
      : registry_(registry), context_(context) {}
  ~BackendPool();
  BackendPool(const BackendPool&) = delete;
  BackendPool& operator=(const BackendPool&) = delete;

  // Parses every request (errors as BackendFactory::Parse, via `reader`) and
  // resolves it to a backend and partition, in request order. On error
  // nothing live changes (backends built by this call are dropped). On
  // success the tenants' partitions exist with their new shares.
  absl::StatusOr<std::vector<Lease>> Acquire(absl::Span<const Request> requests,
                                             const YamlReader& reader);

  // Call once the configuration of the last successful Acquire serves:
  // detaches the partitions of tenants that are gone or moved, and retires
  // backends no tenant uses.
  void Release();
  // Call instead of Release when the configuration of the last successful
  // Acquire will not serve: the previous backends stay live, the ones it
  // built are dropped. (Partitions it created stay, empty.)
  void Abandon();

  void set_in_process_budget(const InProcessBudget& budget) {
    context_.in_process = budget;
  }

  // Live backends (for tests).
  size_t live_count() const { return live_.size(); }

 private:
  struct Live {
    std::shared_ptr<Backend> backend;
    const BackendFactory* factory = nullptr;
    std::vector<std::string> tenants;  // attached by the last Acquire
  };
  void DestroyUnused();

  const BackendRegistry& registry_;
  BackendContext context_;
  absl::flat_hash_map<std::string, Live> live_;      // by InstanceKey
  absl::flat_hash_map<std::string, Live> previous_;  // before the last Acquire
  std::vector<std::shared_ptr<Backend>> retired_;    // until no snapshot holds them
};

}  // namespace traffik
