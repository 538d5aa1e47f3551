#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace traffik {

// Watches a configuration file for changes and calls `on_change` (from its
// own thread) once the changes have settled.
//
// It watches the file's DIRECTORY with inotify, not the file: editors replace
// a file by renaming a new one over it, and a Kubernetes ConfigMap volume
// updates by writing a new timestamped directory and renaming a `..data`
// symlink over the old one, so the watched name (itself a symlink into
// `..data`) never changes at all. Any create, write, rename, delete or
// attribute change in the directory counts; after the first one the watcher
// waits until `debounce` passes without another (one ConfigMap swap is
// several events) and then calls `on_change` once. The callback decides
// whether the content really changed (traffikd compares the file's SHA-256).
//
// Thread-safe; the destructor stops the thread (waiting for a running
// callback to return).
class ConfigWatcher {
 public:
  // `extra_dirs`: more directories watched the same way (the envoy rule
  // files' config_dirs), as given at start.
  static absl::StatusOr<std::unique_ptr<ConfigWatcher>> Start(
      const std::string& config_path, std::chrono::milliseconds debounce,
      std::function<void()> on_change, const std::vector<std::string>& extra_dirs = {});
  ~ConfigWatcher();
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

 private:
  ConfigWatcher(int inotify_fd, int stop_fd, std::chrono::milliseconds debounce,
                std::function<void()> on_change);
  void Loop();
  // Reads and discards the pending events; true if there were any.
  bool Drain();

  const int inotify_fd_;
  const int stop_fd_;  // eventfd: written by the destructor
  const std::chrono::milliseconds debounce_;
  const std::function<void()> on_change_;
  std::thread thread_;
};

}  // namespace traffik
