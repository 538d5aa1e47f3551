// traffikd: flags, config, wiring, signals. All logic lives in the library.
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "app/backends.h"
#include "app/config_watcher.h"
#include "app/health_client.h"
#include "app/log_handlers.h"
#include "app/options.h"
#include "app/reloader.h"
#include "app/server.h"
#include "app/sha256.h"
#include "app/tls.h"
#include "base/fd_limit.h"
#include "clock/clock.h"
#include "config/config.h"

namespace {

constexpr char kVersion[] = "traffikd 0.1.0";

// One ConfigMap update (or an editor's save) is several inotify events: the
// file watch reloads once they have been quiet this long.
constexpr std::chrono::milliseconds kWatchDebounce{200};

void Log(const std::string& line) {
  std::fprintf(stderr, "traffikd: %s\n", line.c_str());
}

int Run(int argc, char** argv) {
  absl::StatusOr<traffik::Options> options = traffik::ParseOptions(argc, argv);
  if (!options.ok()) {
    Log(std::string(options.status().message()) + " (see --help)");
    return 2;
  }
  if (options->help) {
    std::fputs(traffik::Usage().c_str(), stdout);
    return 0;
  }
  if (options->version) {
    std::puts(kVersion);
    return 0;
  }
  if (options->health_check) {
    absl::StatusOr<bool> serving =
        traffik::CheckHealth(*options->health_check, options->health_service,
                             std::chrono::milliseconds(2000), options->health_tls);
    if (!serving.ok()) {
      Log("health check failed: " + std::string(serving.status().message()));
      return 1;
    }
    std::puts(*serving ? "SERVING" : "NOT_SERVING");
    return *serving ? 0 : 1;
  }

  traffik::RegisterBuiltinBackends();
  const std::string source = options->config_path.value_or("(embedded default)");
  // The file is read once: its bytes are hashed and parsed.
  std::string config_hash;
  absl::StatusOr<traffik::Config> config = traffik::DefaultConfig();
  if (options->config_path) {
    absl::StatusOr<std::string> text = traffik::ReadConfigFile(*options->config_path);
    config = text.ok() ? traffik::ParseConfig(*text, *options->config_path)
                       : absl::StatusOr<traffik::Config>(text.status());
    if (text.ok()) config_hash = traffik::Sha256Hex(*text);
  }
  if (!config.ok()) {
    Log("config error: " + std::string(config.status().message()));
    return 1;
  }
  if (options->listen) config->listen = *options->listen;
  if (options->metrics_listen) config->metrics_listen = *options->metrics_listen;
  if (options->check_config) {
    // The certificate files' contents too: "config OK" means it can start.
    if (config->tls.has_value()) {
      if (absl::StatusOr<traffik::CertificateInfo> tls =
              traffik::CheckTlsFiles(*config->tls);
          !tls.ok()) {
        Log("config error: " + std::string(tls.status().message()));
        return 1;
      }
    }
    std::string envoy;
    if (config->envoy.enabled) {
      envoy =
          ", " + std::to_string(config->envoy.rules->domains().size()) + " envoy domains";
    }
    std::printf("traffikd: config OK: %s (%zu throttles, %zu tenants%s)\n",
                source.c_str(), config->throttles.size(), config->tenants.size(),
                envoy.c_str());
    return 0;
  }

  // gRPC's and protobuf's own log lines can be triggered by callers (bad
  // frames, bad messages): rate-limit them like every such line.
  traffik::InstallLogHandlers(traffik::ProcessLog());

  // Peers that vanish mid-write (Redis, scrapers) must not kill the process.
  signal(SIGPIPE, SIG_IGN);

  // Block the stop signals in every thread (threads inherit the mask) and
  // take them synchronously below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);  // reload
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  // Every client connection is a file descriptor: a soft limit of 1024 (the
  // usual default) would cap the server near 1000 clients, and gRPC 1.51
  // stops accepting on a listener for good after one accept() fails with
  // EMFILE. Up to the hard limit needs no privilege.
  if (absl::StatusOr<traffik::OpenFileLimit> before = traffik::GetOpenFileLimit();
      before.ok()) {
    absl::StatusOr<traffik::OpenFileLimit> after = traffik::RaiseOpenFileLimitToHard();
    if (!after.ok()) {
      Log("open-file limit stays " + std::to_string(before->soft) + ": " +
          std::string(after.status().message()));
    } else if (after->soft != before->soft) {
      Log("raised the open-file limit from " + std::to_string(before->soft) + " to " +
          std::to_string(after->soft) + " (the hard limit)");
    }
  }

  absl::StatusOr<std::unique_ptr<traffik::Server>> server =
      traffik::Server::Start(*config, traffik::SteadyClock::Get());
  if (!server.ok()) {
    Log("cannot start: " + std::string(server.status().message()));
    return 1;
  }
  Log("config " + source + ": " + std::to_string(config->throttles.size()) +
      " throttles, " + std::to_string(config->tenants.size()) + " tenants");
  Log("listening grpc=" + (*server)->grpc_address() + " metrics=" +
      ((*server)->metrics_address().empty() ? "off" : (*server)->metrics_address()));
  if (std::optional<std::string> warning = traffik::PlaintextListenWarning(*config)) {
    Log(*warning);
  }

  (*server)->metrics().SetConfigReloadSuccessTime(
      std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
          .count());
  std::unique_ptr<traffik::ConfigReloader> reloader;
  std::unique_ptr<traffik::ConfigWatcher> watcher;
  if (options->config_path) {
    (*server)->metrics().SetConfigHash(config_hash);
    // Command-line overrides stay: the reloader keeps the running listen
    // addresses whatever the file says.
    reloader = std::make_unique<traffik::ConfigReloader>(**server, *options->config_path,
                                                         *config, config_hash, Log);
    if (config->watch_config) {
      traffik::ConfigReloader* r = reloader.get();
      absl::StatusOr<std::unique_ptr<traffik::ConfigWatcher>> w =
          traffik::ConfigWatcher::Start(
              *options->config_path, kWatchDebounce,
              [r] { (void)r->Reload(/*only_if_changed=*/true); },
              // The envoy rule files' directories too, as the config at start
              // names them (SIGHUP reloads any).
              config->envoy.config_dirs);
      if (w.ok()) {
        watcher = *std::move(w);
      } else {
        Log("not watching the config file (SIGHUP still reloads): " +
            std::string(w.status().message()));
      }
    }
  }

  int signal_number = 0;
  while (true) {
    sigwait(&stop_signals, &signal_number);
    if (signal_number != SIGHUP) break;
    if (reloader == nullptr) {
      Log("received SIGHUP: no --config file to reload");
      continue;
    }
    // Logs one line either way (reloaded, or rejected naming file:line:col).
    (void)reloader->Reload(/*only_if_changed=*/false);
  }
  watcher.reset();  // no reload during shutdown
  if (reloader != nullptr) *config = reloader->running();
  Log(std::string("received ") + (signal_number == SIGTERM ? "SIGTERM" : "SIGINT") +
      ", draining");
  (*server)->Drain();
  // Calls sent before the signal must reach a handler before Shutdown starts
  // (see kMinDrainDelay); drain_delay may ask for longer.
  std::this_thread::sleep_for(std::max(std::chrono::milliseconds(config->drain_delay_ms),
                                       traffik::kMinDrainDelay));
  (*server)->Shutdown(std::chrono::milliseconds(config->shutdown_grace_ms));
  server->reset();
  Log("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  // Debian builds abseil with mutex deadlock detection on (graph-cycle
  // bookkeeping on every lock, gRPC's included): a debugging aid that costs
  // several percent of the server's CPU. Off for the service.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return Run(argc, argv);
}
