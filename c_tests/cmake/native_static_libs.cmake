# Fails when rustc says the static library needs a system library that CMakeLists.txt's
# WMLICENSE_NATIVE_LIBS does not carry.
execute_process(
  COMMAND ${CARGO} rustc --lib --profile ${PROFILE} --target-dir ${TARGET_DIR} --crate-type staticlib
          -- --print native-static-libs
  WORKING_DIRECTORY ${SOURCE_DIR}
  OUTPUT_VARIABLE out ERROR_VARIABLE err RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cargo rustc failed:\n${err}")
endif()
string(REGEX MATCH "native-static-libs: ([^\n]*)" m "${out}\n${err}")
if(NOT m)
  message(FATAL_ERROR "rustc printed no native-static-libs line:\n${err}")
endif()
separate_arguments(libs UNIX_COMMAND "${CMAKE_MATCH_1}")
foreach(lib ${libs})
  string(REGEX REPLACE "^-l" "" name "${lib}")
  if(name STREQUAL "-framework" OR name MATCHES "^/")
    continue()
  endif()
  list(FIND EXPECTED ${name} found)
  if(found EQUAL -1)
    message(FATAL_ERROR "the static library needs '${name}', missing from WMLICENSE_NATIVE_LIBS (${EXPECTED})")
  endif()
endforeach()
message(STATUS "rustc needs: ${CMAKE_MATCH_1}; all carried by wmlicense::wmlicense")
