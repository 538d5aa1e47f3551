#pragma once

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"

namespace traffik {

// Reads the file at `path` whole (following symlinks), refusing one larger
// than `max_bytes`. Errors say only the problem, so each caller names the
// file its own way: kNotFound "no such file" (ENOENT, ENOTDIR),
// kPermissionDenied "permission denied", kInvalidArgument "is a directory",
// "larger than N bytes" or the system's text for any other read error.
absl::StatusOr<std::string> ReadFileBounded(const std::string& path, size_t max_bytes);

}  // namespace traffik
