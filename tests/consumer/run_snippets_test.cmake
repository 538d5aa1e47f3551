# The README snippet test (cmake -P): the C++ blocks of README.md marked to
# compile, plus the snippets in tests/consumer/snippets/, are each compiled as
# a whole translation unit with -Wall -Wextra -Werror against the installed
# package (installed here from the build tree into a fresh prefix), the way an
# application would build them.
#
# Marking a README block: an HTML comment on the line(s) before its ```cpp
# fence (blank lines between are allowed):
#   <!-- compile -->           links traffik::client
#   <!-- compile httplib -->   links traffik::httplib
#   <!-- compile beast -->     links traffik::beast
# A marked block must be a whole file (its #includes and a main() or other
# definitions); unmarked blocks (fragments) are not compiled.
#
# -D variables: TRAFFIK_BUILD_DIR, COMPONENT, README, SNIPPETS_SOURCE_DIR,
# WORK_DIR, GENERATOR, CXX_COMPILER.
cmake_minimum_required(VERSION 3.22)

foreach(var TRAFFIK_BUILD_DIR COMPONENT README SNIPPETS_SOURCE_DIR WORK_DIR GENERATOR
            CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_snippets_test.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
set(sources ${WORK_DIR}/sources)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${sources})

# --- Extract the marked README blocks into ${sources}/readme_<n>.<target>.cc.
file(READ ${README} text)
set(count 0)
set(offset 0)
while(TRUE)
  string(SUBSTRING "${text}" ${offset} -1 rest)
  string(FIND "${rest}" "<!-- compile" marker)
  if(marker EQUAL -1)
    break()
  endif()
  math(EXPR marker_at "${offset} + ${marker}")
  string(SUBSTRING "${text}" ${marker_at} -1 rest)
  string(FIND "${rest}" "-->" marker_end)
  if(marker_end EQUAL -1)
    message(FATAL_ERROR "README: unterminated <!-- compile marker")
  endif()
  math(EXPR marker_length "${marker_end} - 12")  # after "<!-- compile"
  string(SUBSTRING "${rest}" 12 ${marker_length} marker_text)
  string(STRIP "${marker_text}" target)
  if(target STREQUAL "")
    set(target client)
  endif()
  if(NOT target MATCHES "^(client|httplib|beast)$")
    message(FATAL_ERROR "README: unknown snippet target '${target}' (client, httplib, beast)")
  endif()
  # The next fence must be ```cpp, with only blank lines before it.
  string(SUBSTRING "${rest}" ${marker_end} -1 rest)
  string(FIND "${rest}" "\n" line_end)
  math(EXPR line_end "${line_end} + 1")
  string(SUBSTRING "${rest}" ${line_end} -1 rest)
  string(FIND "${rest}" "```cpp\n" fence)
  string(SUBSTRING "${rest}" 0 ${fence} between)
  string(STRIP "${between}" between)
  if(fence EQUAL -1 OR NOT between STREQUAL "")
    message(FATAL_ERROR "README: a <!-- compile --> marker not followed by a ```cpp block")
  endif()
  math(EXPR body_at "${fence} + 7")
  string(SUBSTRING "${rest}" ${body_at} -1 rest)
  string(FIND "${rest}" "\n```" body_end)
  if(body_end EQUAL -1)
    message(FATAL_ERROR "README: unterminated ```cpp block")
  endif()
  math(EXPR body_end "${body_end} + 1")
  string(SUBSTRING "${rest}" 0 ${body_end} body)
  math(EXPR count "${count} + 1")
  file(WRITE ${sources}/readme_${count}.${target}.cc "${body}")
  string(LENGTH "${text}" total)
  string(LENGTH "${rest}" left)
  math(EXPR offset "${total} - ${left} + ${body_end}")
endwhile()
message(STATUS "snippet test: ${count} marked block(s) in ${README}")

file(GLOB own ${SNIPPETS_SOURCE_DIR}/*.cc)
foreach(file IN LISTS own)
  get_filename_component(name ${file} NAME)
  configure_file(${file} ${sources}/${name} COPYONLY)
endforeach()
file(GLOB all ${sources}/*.cc)
if(NOT all)
  message(FATAL_ERROR "no snippets to compile")
endif()

function(step name)
  message(STATUS "snippet test: ${name}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 500)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${name} failed (${rc}):\n${out}\n${err}")
  endif()
endfunction()

step("install"
  ${CMAKE_COMMAND} --install ${TRAFFIK_BUILD_DIR} --prefix ${prefix} --component ${COMPONENT})
step("configure"
  ${CMAKE_COMMAND} -S ${SNIPPETS_SOURCE_DIR} -B ${build} -G ${GENERATOR}
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
  -DCMAKE_PREFIX_PATH=${prefix}
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DSNIPPET_SOURCES=${sources})
step("build" ${CMAKE_COMMAND} --build ${build})
file(REMOVE_RECURSE ${WORK_DIR})
