#pragma once

#include <functional>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "app/server.h"
#include "base/mutex.h"
#include "config/config.h"

namespace traffik {

// Reloads traffikd's configuration file into a running Server, on SIGHUP
// and from the file watch.
//
// A reload reads the file once, hashes those bytes (SHA-256) and validates
// them completely (ParseConfig: every key, every backend's settings), then
// builds the new snapshot (Server::Reload). Anything that fails leaves the
// running configuration serving, logs one line naming file:line:col and
// counts traffik_config_reloads_total{result="error"}. A success counts
// result="success", sets traffik_config_last_reload_success_timestamp_seconds
// and moves traffik_config_info{config_hash} to the new hash.
//
// Settings bound at startup keep their running value until a restart, with
// one log line naming them: `listen`, `metrics_listen` (so the command-line
// overrides keep winning), `memory.sweep_interval`, `watch_config` and
// `admin_api` (the gRPC server's services are fixed once it runs).
// Everything else applies: throttles, tenants, backends, shares, limits,
// max_identifier_bytes, max_batch_size, shutdown_grace, drain_delay.
//
// Thread-safe: reloads are serialised.
class ConfigReloader {
 public:
  using LogFn = std::function<void(const std::string&)>;

  // `running` is the configuration `server` started with (after the command
  // line's overrides) and `hash` the SHA-256 of the file it came from.
  ConfigReloader(Server& server, std::string path, Config running, std::string hash,
                 LogFn log);

  // Reloads the file. With `only_if_changed` (the file watch), a file whose
  // SHA-256 equals the running one is skipped (no log, no metric) unless the
  // envoy rule files changed (their names and bytes, see
  // envoy::RuleSet::DigestDirs): one ConfigMap update fires several events,
  // an editor may touch the file without changing it. Returns the error that
  // was logged, if any.
  absl::Status Reload(bool only_if_changed);

  // The configuration serving now.
  Config running() const;

 private:
  absl::Status Fail(const absl::Status& error) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the running config's envoy rule files (envoy.config_dirs) differ
  // from the bytes it loaded.
  bool EnvoyRulesChanged() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Server& server_;
  const std::string path_;
  const LogFn log_;
  mutable Mutex mu_;
  Config running_ ABSL_GUARDED_BY(mu_);
  std::string hash_ ABSL_GUARDED_BY(mu_);
};

}  // namespace traffik
