# Instrumented builds of Traffik: sanitizers, clang's thread-safety analysis
# and libFuzzer. Each is a cache option; all apply to every target of this
# project (compile and link), never to the Debian libraries it links.
#
#   -DTRAFFIK_SANITIZE=address,undefined   AddressSanitizer + UBSan (gcc or clang)
#   -DTRAFFIK_SANITIZE=thread              ThreadSanitizer (gcc or clang)
#   -DTRAFFIK_THREAD_SAFETY_ANALYSIS=ON    clang: -Wthread-safety as errors
#   -DTRAFFIK_FUZZ=ON                      clang: fuzz/ targets with libFuzzer, the
#                                          rest with coverage for them
#
# Runtime defaults (options, and the TSan suppressions for uninstrumented
# libraries in cmake/sanitizers/tsan.supp) are compiled into every executable
# of the project (cmake/sanitizers/defaults.cc.in), so `ctest`, and the
# traffikd processes the e2e tests start, need no environment. Environment
# variables (ASAN_OPTIONS, TSAN_OPTIONS, ...) still override them.

set(TRAFFIK_SANITIZE "" CACHE STRING
  "Sanitizers for every target: empty, 'address,undefined' or 'thread'")
set_property(CACHE TRAFFIK_SANITIZE PROPERTY STRINGS "" "address,undefined" "thread")
option(TRAFFIK_THREAD_SAFETY_ANALYSIS
  "clang only: check ABSL_GUARDED_BY & co. with -Wthread-safety, as errors" OFF)
option(TRAFFIK_FUZZ "clang only: build the libFuzzer targets in fuzz/" OFF)

# The compile and link flags of the chosen sanitizers (also for tests that
# build code outside this project against it, e.g. the consumer test).
set(TRAFFIK_SANITIZER_FLAGS "")

if(TRAFFIK_SANITIZE)
  string(REPLACE "," ";" _traffik_sanitizers "${TRAFFIK_SANITIZE}")
  foreach(s IN LISTS _traffik_sanitizers)
    if(NOT s MATCHES "^(address|undefined|thread)$")
      message(FATAL_ERROR "TRAFFIK_SANITIZE: unknown sanitizer '${s}' "
        "(use address,undefined or thread)")
    endif()
  endforeach()
  if("thread" IN_LIST _traffik_sanitizers AND "address" IN_LIST _traffik_sanitizers)
    message(FATAL_ERROR "TRAFFIK_SANITIZE: thread and address cannot be combined")
  endif()
  list(APPEND TRAFFIK_SANITIZER_FLAGS
    -fsanitize=${TRAFFIK_SANITIZE} -fno-omit-frame-pointer -fno-optimize-sibling-calls)
  if("undefined" IN_LIST _traffik_sanitizers)
    # Any UB report fails the process (and so the test), not just a message.
    list(APPEND TRAFFIK_SANITIZER_FLAGS -fno-sanitize-recover=all)
    if(CMAKE_CXX_COMPILER_ID MATCHES "Clang")
      # Integer checks clang has beyond gcc's set (unsigned wrap is defined
      # behaviour and used on purpose by hashes: not enabled).
      list(APPEND TRAFFIK_SANITIZER_FLAGS -fsanitize=float-divide-by-zero)
    endif()
  endif()
endif()

if(TRAFFIK_THREAD_SAFETY_ANALYSIS)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TRAFFIK_THREAD_SAFETY_ANALYSIS needs clang "
      "(-DCMAKE_CXX_COMPILER=clang++)")
  endif()
  add_compile_options(-Wthread-safety -Werror=thread-safety)
endif()

if(TRAFFIK_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "TRAFFIK_FUZZ needs clang (-DCMAKE_CXX_COMPILER=clang++)")
  endif()
  # Coverage for the code under test; fuzz/ links the fuzzer itself.
  add_compile_options(-fsanitize=fuzzer-no-link)
  add_link_options(-fsanitize=fuzzer-no-link)
endif()

if(TRAFFIK_SANITIZER_FLAGS)
  add_compile_options(${TRAFFIK_SANITIZER_FLAGS})
  add_link_options(${TRAFFIK_SANITIZER_FLAGS})
  message(STATUS "traffik: sanitizers: ${TRAFFIK_SANITIZE}")
endif()

# Adds the sanitizer runtime defaults to every executable defined so far under
# `dir` (call once at the end of the top-level CMakeLists.txt).
function(traffik_add_sanitizer_defaults dir)
  if(NOT TRAFFIK_SANITIZE AND NOT TRAFFIK_FUZZ)
    return()
  endif()
  set(out ${PROJECT_BINARY_DIR}/traffik_sanitizer_defaults.cc)
  # The rules only (comments stay in the file), as one C string.
  file(STRINGS ${PROJECT_SOURCE_DIR}/cmake/sanitizers/tsan.supp lines)
  set(TRAFFIK_TSAN_SUPPRESSIONS "")
  foreach(line IN LISTS lines)
    string(REGEX REPLACE "#.*" "" line "${line}")
    string(STRIP "${line}" line)
    if(line STREQUAL "")
      continue()
    endif()
    if(line MATCHES "[\"\\\\]")
      message(FATAL_ERROR "tsan.supp: no quotes or backslashes please: ${line}")
    endif()
    string(APPEND TRAFFIK_TSAN_SUPPRESSIONS "${line}\\n")
  endforeach()
  configure_file(${PROJECT_SOURCE_DIR}/cmake/sanitizers/defaults.cc.in ${out} @ONLY)
  set_property(DIRECTORY ${PROJECT_SOURCE_DIR} APPEND PROPERTY
    CMAKE_CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/cmake/sanitizers/tsan.supp)
  _traffik_add_defaults_in(${dir} ${out})
endfunction()

function(_traffik_add_defaults_in dir source)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t IN LISTS targets)
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "EXECUTABLE")
      target_sources(${t} PRIVATE ${source})
    endif()
  endforeach()
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    _traffik_add_defaults_in(${sub} ${source})
  endforeach()
endfunction()
