#include "app/reloader.h"

#include <chrono>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "app/sha256.h"

namespace traffik {

ConfigReloader::ConfigReloader(Server& server, std::string path, Config running,
                               std::string hash, LogFn log)
    : server_(server),
      path_(std::move(path)),
      log_(std::move(log)),
      running_(std::move(running)),
      hash_(std::move(hash)) {}

Config ConfigReloader::running() const {
  MutexLock lock(&mu_);
  return running_;
}

absl::Status ConfigReloader::Fail(const absl::Status& error) {
  server_.metrics().CountConfigReload(/*success=*/false);
  log_(absl::StrCat("config reload rejected, the running configuration keeps serving: ",
                    error.message()));
  return error;
}

absl::Status ConfigReloader::Reload(bool only_if_changed) {
  MutexLock lock(&mu_);
  absl::StatusOr<std::string> text = ReadConfigFile(path_);
  if (!text.ok()) return Fail(text.status());
  std::string hash = Sha256Hex(*text);
  if (only_if_changed && hash == hash_) return absl::OkStatus();
  absl::StatusOr<Config> config = ParseConfig(*text, path_);
  if (!config.ok()) return Fail(config.status());

  // What is bound at startup keeps its running value.
  std::vector<std::string> ignored;
  if (config->listen != running_.listen) ignored.push_back("listen");
  if (config->metrics_listen != running_.metrics_listen) {
    ignored.push_back("metrics_listen");
  }
  if (config->memory.sweep_interval_ms != running_.memory.sweep_interval_ms) {
    ignored.push_back("memory.sweep_interval");
  }
  if (config->watch_config != running_.watch_config) ignored.push_back("watch_config");
  // The gRPC server's services are fixed once it runs.
  if (config->admin_api != running_.admin_api) ignored.push_back("admin_api");
  // TLS is the listening port's: the port is not re-bound (the certificate
  // files themselves are re-read when they change, without a reload).
  if (config->tls != running_.tls) ignored.push_back("tls");
  config->tls = running_.tls;
  config->listen = running_.listen;
  config->metrics_listen = running_.metrics_listen;
  config->memory.sweep_interval_ms = running_.memory.sweep_interval_ms;
  config->watch_config = running_.watch_config;
  config->admin_api = running_.admin_api;

  if (absl::Status s = server_.Reload(*config); !s.ok()) return Fail(s);
  server_.metrics().CountConfigReload(/*success=*/true);
  server_.metrics().SetConfigReloadSuccessTime(
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  server_.metrics().SetConfigHash(hash);
  log_(absl::StrCat("config reloaded: ", path_, ": ", config->throttles.size(),
                    " throttles, ", config->tenants.size(), " tenants, sha256 ", hash));
  if (!ignored.empty()) {
    log_(absl::StrCat("config reload: ", absl::StrJoin(ignored, ", "),
                      " changed; kept until restart"));
  }
  running_ = *std::move(config);
  hash_ = std::move(hash);
  return absl::OkStatus();
}

}  // namespace traffik
