# The packaging test (cmake -P): installs the traffik package component from
# the build tree into a fresh prefix, builds tests/consumer against it with
# find_package(traffik), and runs the consumer binary.
#
# -D variables: TRAFFIK_BUILD_DIR, COMPONENT, CONSUMER_SOURCE_DIR, WORK_DIR,
# GENERATOR, CXX_COMPILER.
cmake_minimum_required(VERSION 3.22)

foreach(var TRAFFIK_BUILD_DIR COMPONENT CONSUMER_SOURCE_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run_consumer_test.cmake: -D${var}=... is required")
  endif()
endforeach()

set(prefix ${WORK_DIR}/prefix)
set(build ${WORK_DIR}/build)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})

function(step name)
  message(STATUS "consumer test: ${name}")
  execute_process(COMMAND ${ARGN}
    RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 300)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${name} failed (${rc}):\n${out}\n${err}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

step("install"
  ${CMAKE_COMMAND} --install ${TRAFFIK_BUILD_DIR} --prefix ${prefix} --component ${COMPONENT})
foreach(file include/traffik/client.h include/traffik/testing/in_process_client.h
             include/traffik/adapters/httplib.h
             lib/cmake/traffik/traffikHttplibTargets.cmake
             lib/cmake/traffik/traffikBeastTargets.cmake)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "not installed: ${file}")
  endif()
endforeach()
file(GLOB_RECURSE private_headers ${prefix}/include/*impl*.h ${prefix}/include/traffik/v1/*
     ${prefix}/include/bucket/* ${prefix}/include/engine/* ${prefix}/include/base/*)
# The client component alone: no traffikd.
if(EXISTS ${prefix}/bin/traffikd)
  message(FATAL_ERROR "the client component installed traffikd")
endif()
if(private_headers)
  message(FATAL_ERROR "private headers installed: ${private_headers}")
endif()

step("configure"
  ${CMAKE_COMMAND} -S ${CONSUMER_SOURCE_DIR} -B ${build} -G ${GENERATOR}
  -DCMAKE_CXX_COMPILER=${CXX_COMPILER}
  -DCMAKE_PREFIX_PATH=${prefix}
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF)
string(FIND "${step_output}" "from ${prefix}/" found)
if(found EQUAL -1)
  message(FATAL_ERROR "traffik was not found in ${prefix}:\n${step_output}")
endif()

step("build" ${CMAKE_COMMAND} --build ${build})

# Fails open against a closed port: exit 0 only for "allowed by failure policy".
step("run" ${build}/traffik_consumer 127.0.0.1:1)
message(STATUS "consumer test: ${step_output}")
# The httplib decorator on the in-process client: 200, 200, 429.
step("run httplib" ${build}/traffik_consumer_httplib)
message(STATUS "consumer test: ${step_output}")
file(REMOVE_RECURSE ${WORK_DIR})
