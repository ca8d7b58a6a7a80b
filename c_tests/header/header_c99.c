/* The header compiles alone as strict C99 and may be included twice. */
#include "wmlicense.h"
#include "wmlicense.h"

int wmlicense_header_c99_compiles(void);
int wmlicense_header_c99_compiles(void) {
  wm_license l = {0};
  wm_hresult hr = WM_E_POINTER;
  (void)l;
  return WM_FAILED(hr) && WM_RIGHT_BACKUP == 0x200;
}
