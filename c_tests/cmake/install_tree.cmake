# Installs the build into PREFIX, then compiles and links the demo against the installed tree
# using only the flags its pkg-config file gives (read here, so no pkg-config tool is needed).
file(REMOVE_RECURSE ${PREFIX})
execute_process(COMMAND ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${PREFIX} RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "cmake --install failed")
endif()
file(GLOB_RECURSE pc ${PREFIX}/*/pkgconfig/wmlicense.pc)
file(GLOB_RECURSE header ${PREFIX}/include/wmlicense.h)
file(GLOB_RECURSE static_lib ${PREFIX}/*/libwmlicense.a)
if(NOT pc OR NOT header OR NOT static_lib)
  message(FATAL_ERROR "installed tree lacks a file: pc='${pc}' header='${header}' lib='${static_lib}'")
endif()
file(READ ${pc} text)
string(REGEX MATCH "Libs.private: ([^\n]*)" _ "${text}")
separate_arguments(private UNIX_COMMAND "${CMAKE_MATCH_1}")
get_filename_component(libdir ${static_lib} DIRECTORY)
get_filename_component(incdir ${header} DIRECTORY)
# Link the static library explicitly (the shared one would need a runtime path).
execute_process(
  COMMAND ${CC} -std=c11 -Wall -Werror -I${incdir} ${DEMO} ${static_lib} ${private} -o ${PREFIX}/demo
  RESULT_VARIABLE rc ERROR_VARIABLE err)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "the demo does not build against the installed tree:\n${err}")
endif()
message(STATUS "installed tree in ${PREFIX} builds the demo")
