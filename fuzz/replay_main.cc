// A main for the fuzz targets without libFuzzer: runs LLVMFuzzerTestOneInput
// once per file named on the command line, or per file in each directory named
// (not recursive; dot files skipped). So the corpora and every crash found
// (fuzz/regressions/<target>/) run in the plain test suite with any compiler.
//
// Exit status: 0 when every input ran (a crash crashes the process, as under
// libFuzzer); 2 when an argument cannot be read or no input was found.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

bool RunFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "replay: cannot read %s\n", path.c_str());
    return false;
  }
  const std::string bytes((std::istreambuf_iterator<char>(in)),
                          std::istreambuf_iterator<char>());
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  size_t ran = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg(argv[i]);
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& entry : std::filesystem::directory_iterator(arg, ec)) {
        if (entry.is_regular_file() && entry.path().filename().string()[0] != '.') {
          files.push_back(entry.path());
        }
      }
      std::sort(files.begin(), files.end());
      for (const auto& file : files) {
        if (!RunFile(file)) return 2;
        ++ran;
      }
    } else {
      if (!RunFile(arg)) return 2;
      ++ran;
    }
  }
  std::printf("replay: %zu inputs ran\n", ran);
  return ran > 0 ? 0 : 2;
}
