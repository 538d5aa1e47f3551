#include "app/config_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

// "dir/file" -> "dir"; "file" -> ".".
std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

constexpr uint32_t kEvents = IN_CREATE | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM |
                             IN_DELETE | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF;

}  // namespace

absl::StatusOr<std::unique_ptr<ConfigWatcher>> ConfigWatcher::Start(
    const std::string& config_path, std::chrono::milliseconds debounce,
    std::function<void()> on_change, const std::vector<std::string>& extra_dirs) {
  int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("inotify_init1: ", std::strerror(errno)));
  }
  std::vector<std::string> dirs = {DirectoryOf(config_path)};
  dirs.insert(dirs.end(), extra_dirs.begin(), extra_dirs.end());
  for (const std::string& dir : dirs) {
    if (inotify_add_watch(fd, dir.c_str(), kEvents) < 0) {
      const int err = errno;
      close(fd);
      return absl::InternalError(
          absl::StrCat("cannot watch directory ", dir, ": ", std::strerror(err)));
    }
  }
  int stop = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop < 0) {
    const int err = errno;
    close(fd);
    return absl::InternalError(absl::StrCat("eventfd: ", std::strerror(err)));
  }
  std::unique_ptr<ConfigWatcher> watcher(
      new ConfigWatcher(fd, stop, debounce, std::move(on_change)));
  watcher->thread_ = std::thread([w = watcher.get()] { w->Loop(); });
  return watcher;
}

ConfigWatcher::ConfigWatcher(int inotify_fd, int stop_fd,
                             std::chrono::milliseconds debounce,
                             std::function<void()> on_change)
    : inotify_fd_(inotify_fd),
      stop_fd_(stop_fd),
      debounce_(debounce),
      on_change_(std::move(on_change)) {}

ConfigWatcher::~ConfigWatcher() {
  const uint64_t one = 1;
  ssize_t n = write(stop_fd_, &one, sizeof(one));
  (void)n;
  if (thread_.joinable()) thread_.join();
  close(inotify_fd_);
  close(stop_fd_);
}

bool ConfigWatcher::Drain() {
  alignas(struct inotify_event) char buf[4096];
  bool any = false;
  while (true) {
    const ssize_t n = read(inotify_fd_, buf, sizeof(buf));
    if (n > 0) {
      any = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    return any;  // EAGAIN: nothing more pending
  }
}

void ConfigWatcher::Loop() {
  pollfd fds[2] = {{inotify_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
  bool pending = false;
  while (true) {
    // Waiting for a first event: no timeout; debouncing: until quiet.
    const int timeout_ms = pending ? static_cast<int>(debounce_.count()) : -1;
    fds[0].revents = fds[1].revents = 0;
    const int ready = poll(fds, 2, timeout_ms);
    if (ready < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;  // stopping
    if (ready == 0) {
      // Quiet for `debounce_` since the last event.
      pending = false;
      on_change_();
      continue;
    }
    if ((fds[0].revents & POLLIN) != 0 && Drain()) pending = true;
  }
}

}  // namespace traffik
