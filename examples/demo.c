/* wmlicense demo: open the default store, put a few licenses, list them. */
#include "wmlicense.h"

#include <stdio.h>
#include <string.h>

static int32_t print_license(const wm_license *l, void *ctx) {
  size_t i;
  (void)ctx;
  printf("  key ID ");
  for (i = 0; i < l->key_id_len; i++) printf("%02x", l->key_id[i]);
  printf("  %-28s rights 0x%03x  plays %d%s\n", l->title ? l->title : "(untitled)", l->rights,
         l->play_count, (l->rights & WM_RIGHT_BACKUP) ? "" : "  (no backup right)");
  return 0;
}

static int fail(const char *what, wm_hresult hr) {
  fprintf(stderr, "%s failed: 0x%08x %s\n  %s\n", what, (unsigned)hr, wm_hresult_message(hr),
          wm_last_error_message());
  return 1;
}

int main(void) {
  static const struct { const char *kid, *key, *title; uint32_t rights; int32_t plays; } songs[] = {
    {"kid-blue-in-green", "content-key-0001", "Blue in Green", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, -1},
    {"kid-so-what", "content-key-0002", "So What", WM_RIGHT_PLAYBACK | WM_RIGHT_COPY_TO_CD | WM_RIGHT_BACKUP, 10},
    {"kid-all-blues", "content-key-0003", "All Blues", WM_RIGHT_PLAYBACK, 3},
  };
  wm_license_store *store = NULL;
  uint64_t count = 0;
  size_t i;
  wm_hresult hr;

  printf("wmlicense %s\n", wm_version());
  hr = wm_license_store_open(NULL, &store); /* the default store: $WMLICENSE_HOME */
  if (WM_FAILED(hr)) return fail("wm_license_store_open", hr);
  for (i = 0; i < sizeof songs / sizeof songs[0]; i++) {
    wm_license l;
    memset(&l, 0, sizeof l);
    l.key_id = (const uint8_t *)songs[i].kid;
    l.key_id_len = strlen(songs[i].kid);
    l.content_key = (const uint8_t *)songs[i].key;
    l.content_key_len = strlen(songs[i].key);
    l.title = songs[i].title;
    l.rights = songs[i].rights;
    l.play_count = songs[i].plays;
    l.issued_at = 1700000000;
    hr = wm_license_store_put(store, &l);
    if (WM_FAILED(hr)) return fail("wm_license_store_put", hr);
  }
  hr = wm_license_store_count(store, &count);
  if (WM_FAILED(hr)) return fail("wm_license_store_count", hr);
  printf("store holds %llu licenses:\n", (unsigned long long)count);
  hr = wm_license_store_for_each(store, print_license, NULL);
  if (WM_FAILED(hr)) return fail("wm_license_store_for_each", hr);
  wm_license_store_close(store);
  return 0;
}
