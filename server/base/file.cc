#include "base/file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace traffik {
namespace {

absl::Status ErrnoError(int err) {
  switch (err) {
    case ENOENT:
    case ENOTDIR:
      return absl::NotFoundError("no such file");
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError("permission denied");
    case EISDIR:
      return absl::InvalidArgumentError("is a directory");
    default:
      return absl::InvalidArgumentError(std::strerror(err));
  }
}

}  // namespace

absl::StatusOr<std::string> ReadFileBounded(const std::string& path, size_t max_bytes) {
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(errno);
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoError(err);
  }
  if (S_ISDIR(st.st_mode)) {
    close(fd);
    return ErrnoError(EISDIR);
  }
  std::string text;
  char buf[64 * 1024];
  while (true) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      close(fd);
      return ErrnoError(err);
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
    if (text.size() > max_bytes) {
      close(fd);
      return absl::InvalidArgumentError(
          absl::StrCat("larger than ", max_bytes, " bytes"));
    }
  }
  close(fd);
  return text;
}

}  // namespace traffik
