/* bcryptprimitives.dll for Wine 8, which lacks ProcessPrng (added in Wine 9). Rust's standard
   library takes its random bytes from ProcessPrng since Rust 1.78; this DLL, placed beside the
   executables and chosen with WINEDLLOVERRIDES=bcryptprimitives=n, answers it with Wine's
   BCryptGenRandom (the system's preferred generator). Only for running the Windows build under
   Wine 8: Windows 10 and later have ProcessPrng. */
#include <windows.h>
#include <bcrypt.h>

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
  while (len > 0) {
    ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
    if (BCryptGenRandom(NULL, data, n, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
    data += n;
    len -= n;
  }
  return TRUE;
}
