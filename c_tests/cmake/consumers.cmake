# Outside projects consuming wmlicense, each built and run (a backup and a restore: the demo):
#   1. the installed tree: both libraries (the shared one as libwmlicense.so.X.Y.Z with its
#      SONAME link and dev link), the header, two pkg-config files, the CMake package config;
#   2. add_subdirectory() from a C-only project (the library's cargo build reused through
#      WMLICENSE_TARGET_DIR; a separate configure checks that by default it builds into the
#      consumer's build tree, and that a Release build picks cargo's release profile);
#   3. find_package(wmlicense CONFIG): static (the default; no libwmlicense.so needed at run
#      time) and COMPONENTS shared (needed);
#   4. pkg-config: wmlicense.pc (shared) and wmlicense-static.pc (static).
# Inputs: BUILD_DIR (the configured wmlicense build), SOURCE_DIR, WORK, CC, PROGRAM (a C
# program doing a backup and a restore), TARGET_DIR (cargo's target directory of BUILD_DIR),
# SOVERSION, VERSION.
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${WORK})
set(prefix ${WORK}/prefix)

function(run what)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${what} failed (${rc}):\n${out}\n${err}")
  endif()
  set(last_out "${out}" PARENT_SCOPE)
endfunction()

# The dynamic dependencies of an executable (readelf, when there is one).
find_program(READELF readelf)
function(check_needs exe want)
  if(NOT READELF)
    return()
  endif()
  execute_process(COMMAND ${READELF} -d ${exe} OUTPUT_VARIABLE dyn)
  string(FIND "${dyn}" "libwmlicense.so" at)
  if(want AND at EQUAL -1)
    message(FATAL_ERROR "${exe} should load libwmlicense.so and does not:\n${dyn}")
  elseif(NOT want AND NOT at EQUAL -1)
    message(FATAL_ERROR "${exe} should be linked statically and loads libwmlicense.so:\n${dyn}")
  endif()
endfunction()

# Runs a consumer: a backup and a restore in a fresh WMLICENSE_HOME.
function(run_consumer what exe)
  file(MAKE_DIRECTORY ${WORK}/home-${what})
  run("${what}: running the consumer" ${CMAKE_COMMAND} -E env WMLICENSE_HOME=${WORK}/home-${what} ${exe})
  if(NOT last_out MATCHES "restored store")
    message(FATAL_ERROR "${what}: the consumer did not restore:\n${last_out}")
  endif()
  message(STATUS "${what}: built and ran a backup and a restore")
endfunction()

# 1. The installed tree.
run("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
set(lib ${prefix}/lib)
if(NOT EXISTS ${lib})
  file(GLOB lib ${prefix}/lib*)
endif()
foreach(f libwmlicense.a libwmlicense.so.${VERSION} libwmlicense.so.${SOVERSION} libwmlicense.so
          pkgconfig/wmlicense.pc pkgconfig/wmlicense-static.pc
          cmake/wmlicense/wmlicenseConfig.cmake cmake/wmlicense/wmlicenseConfigVersion.cmake)
  if(NOT EXISTS ${lib}/${f})
    message(FATAL_ERROR "the installed tree lacks ${lib}/${f}")
  endif()
endforeach()
if(NOT EXISTS ${prefix}/include/wmlicense.h)
  message(FATAL_ERROR "the installed tree lacks include/wmlicense.h")
endif()
if(READELF)
  execute_process(COMMAND ${READELF} -d ${lib}/libwmlicense.so.${VERSION} OUTPUT_VARIABLE dyn)
  if(NOT dyn MATCHES "SONAME[^\n]*libwmlicense\\.so\\.${SOVERSION}\\]")
    message(FATAL_ERROR "the shared library's SONAME is not libwmlicense.so.${SOVERSION}:\n${dyn}")
  endif()
endif()

# 2. add_subdirectory from a C-only project. First a configure only, as a newcomer would do it:
# Release picks cargo's release profile, and cargo builds into the consumer's build tree.
run("configure (add_subdirectory, Release)" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/c_tests/consumer
    -B ${WORK}/subdir-release -DMODE=subdir -DWMLICENSE_SOURCE_DIR=${SOURCE_DIR}
    -DPROGRAM=${PROGRAM} -DCMAKE_BUILD_TYPE=Release -DCMAKE_C_COMPILER=${CC})
if(NOT last_out MATCHES "wmlicense: cargo profile release")
  message(FATAL_ERROR "a Release build does not pick cargo's release profile:\n${last_out}")
endif()
file(STRINGS ${WORK}/subdir-release/CMakeCache.txt target_line REGEX "^WMLICENSE_TARGET_DIR:")
if(NOT target_line MATCHES "${WORK}/subdir-release/")
  message(FATAL_ERROR "inside another project cargo does not build into its build tree: ${target_line}")
endif()
# Then a build (reusing the library already built in TARGET_DIR, so no second cargo build).
run("configure (add_subdirectory)" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/c_tests/consumer
    -B ${WORK}/subdir -DMODE=subdir -DWMLICENSE_SOURCE_DIR=${SOURCE_DIR} -DPROGRAM=${PROGRAM}
    -DCMAKE_BUILD_TYPE=Debug -DWMLICENSE_TARGET_DIR=${TARGET_DIR} -DCMAKE_C_COMPILER=${CC})
run("build (add_subdirectory)" ${CMAKE_COMMAND} --build ${WORK}/subdir)
check_needs(${WORK}/subdir/consumer FALSE)
run_consumer(add_subdirectory ${WORK}/subdir/consumer)

# 3. find_package: static by default, shared on request.
foreach(mode package package-shared)
  run("configure (${mode})" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/c_tests/consumer -B ${WORK}/${mode}
      -DMODE=${mode} -DPROGRAM=${PROGRAM} -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_C_COMPILER=${CC})
  run("build (${mode})" ${CMAKE_COMMAND} --build ${WORK}/${mode})
  if(mode STREQUAL "package")
    check_needs(${WORK}/${mode}/consumer FALSE)
  else()
    check_needs(${WORK}/${mode}/consumer TRUE)
  endif()
  run_consumer(find_package-${mode} ${WORK}/${mode}/consumer)
endforeach()

# 4. pkg-config (the tool when there is one, else the files' variables resolved here).
find_program(PKG_CONFIG NAMES pkg-config pkgconf)
function(pc_flags name static out)
  if(PKG_CONFIG)
    set(args --cflags --libs)
    if(static)
      list(APPEND args --static)
    endif()
    execute_process(COMMAND ${CMAKE_COMMAND} -E env PKG_CONFIG_PATH=${lib}/pkgconfig ${PKG_CONFIG} ${args} ${name}
                    OUTPUT_VARIABLE flags RESULT_VARIABLE rc OUTPUT_STRIP_TRAILING_WHITESPACE)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "pkg-config ${name} failed")
    endif()
  else()
    file(READ ${lib}/pkgconfig/${name}.pc text)
    set(pcfiledir ${lib}/pkgconfig)
    foreach(var prefix libdir includedir)
      string(REGEX MATCH "(^|\n)${var}=([^\n]*)" _ "${text}")
      set(value "${CMAKE_MATCH_2}")
      foreach(v pcfiledir prefix libdir)
        string(REPLACE "\${${v}}" "${${v}}" value "${value}")
      endforeach()
      set(${var} "${value}")
    endforeach()
    string(REGEX MATCH "Libs: ([^\n]*)" _ "${text}")
    set(flags "-I${includedir} ${CMAKE_MATCH_1}")
    string(REPLACE "\${libdir}" "${libdir}" flags "${flags}")
  endif()
  separate_arguments(flags UNIX_COMMAND "${flags}")
  set(${out} ${flags} PARENT_SCOPE)
endfunction()
pc_flags(wmlicense FALSE shared_flags)
run("cc with pkg-config wmlicense" ${CC} -std=c11 ${PROGRAM} ${shared_flags} -Wl,-rpath,${lib} -o ${WORK}/pc-shared)
check_needs(${WORK}/pc-shared TRUE)
run_consumer(pkg-config-shared ${WORK}/pc-shared)
pc_flags(wmlicense-static TRUE static_flags)
run("cc with pkg-config --static wmlicense-static" ${CC} -std=c11 ${PROGRAM} ${static_flags} -o ${WORK}/pc-static)
check_needs(${WORK}/pc-static FALSE)
run_consumer(pkg-config-static ${WORK}/pc-static)
