// The header compiles as C++ (extern "C"), included twice, and its macros work in C++.
#include "wmlicense.h"
#include "wmlicense.h"

#include <cstdio>
#include <cstring>

int main() {
  const char *v = wm_version();
  char expected[64];
  std::snprintf(expected, sizeof expected, "%d.%d.%d", WM_VERSION_MAJOR, WM_VERSION_MINOR, WM_VERSION_PATCH);
  if (std::strcmp(v, expected) != 0) {
    std::fprintf(stderr, "header version %s, library %s\n", expected, v);
    return 1;
  }
  wm_license_store *s = nullptr;
  if (wm_license_store_open("/nonexistent\xff", &s) != WM_E_INVALIDARG) return 1;
  if (!WM_FAILED(WM_E_POINTER) || !WM_SUCCEEDED(WM_S_FALSE)) return 1;
  std::printf("test_header_cpp: all checks passed\n");
  return 0;
}
