# Proves the AddressSanitizer runtime is linked into a test program.
find_program(NM nm REQUIRED)
execute_process(COMMAND ${NM} ${EXE} OUTPUT_VARIABLE out)
execute_process(COMMAND ${NM} -D ${EXE} OUTPUT_VARIABLE dout)
if(NOT "${out}${dout}" MATCHES "__asan_init")
  message(FATAL_ERROR "${EXE} is not linked with AddressSanitizer")
endif()
