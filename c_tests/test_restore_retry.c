/* A restore into a new store that fails after the License Management Service granted it (a
   corrupt chunk) or is cancelled does not cost another device: retrying into the same place
   presents the same device, so with a limit of one device the retry still works, while a
   different place is refused. */
#include "restorer_util.h"

int main(void) {
  char home[512], src[700], bdir[700], bad[760], good[760], target[700], other[700];
  wmr_recorder rec;
  wm_backup_restorer *r;
  uint8_t *bytes = NULL;
  size_t len = 0;
  unsigned i;
  static wm_license lic[300];
  static char kids[300][32];
  static uint8_t keys[300][16];

  wmr_fresh_home(home, sizeof home, "retry");
  setenv("WMLICENSE_RESTORE_DEVICE_LIMIT", "1", 1);
  snprintf(src, sizeof src, "%s/source", home);
  snprintf(bdir, sizeof bdir, "%s/backup", home);
  snprintf(good, sizeof good, "%s/licenses.wmlb", bdir);
  snprintf(bad, sizeof bad, "%s/corrupt.wmlb", home);
  snprintf(target, sizeof target, "%s/new-store", home);
  snprintf(other, sizeof other, "%s/other-store", home);

  for (i = 0; i < 300; i++) wmt_make_license(&lic[i], i, kids[i], keys[i], WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP);
  REQUIRE_OK(wmr_put(src, lic, 300));

  wmr_init(&rec);
  r = wmr_create(&rec);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, src));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_BACKUP_PATH, bdir));
  CHECK_HR(wmr_run_backup(r, &rec, 0), WM_S_OK);
  CHECK_END(&rec, WM_S_OK, 300, 300, 0);

  /* The same backup with its last byte flipped: the header is intact, so the service grants it
     (and counts the device); the last chunk then fails to authenticate. */
  CHECK(wmr_read_file(good, &bytes, &len) == 0);
  CHECK(len > 300);
  bytes[len - 1] ^= 0x01;
  CHECK(wmr_write_file(bad, bytes, len) == 0);
  free(bytes);

  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, target));
  REQUIRE_OK(wmr_set_str(r, WM_PROP_RESTORE_PATH, bad));
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  CHECK(wmr_find_status(&rec, WM_STATUS_BACKUPRESTORE_DISCONNECTING) != NULL);
  CHECK_HR(wmr_end(&rec).hr, WM_E_BACKUP_CORRUPT);
  CHECK(!wmr_exists(target));

  /* Twice more, for good measure; then the intact backup into the same place works. */
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  CHECK_HR(wmr_end(&rec).hr, WM_E_BACKUP_CORRUPT);
  REQUIRE_OK(wmr_set_str(r, WM_PROP_RESTORE_PATH, bdir));
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE | WM_RESTORE_VERIFY_ONLY), WM_S_OK);
  CHECK_END(&rec, WM_S_OK, 300, 300, 0);
  CHECK(!wmr_exists(target));
  {
    char pending[700];
    snprintf(pending, sizeof pending, "%s/.new-store.pending", home);
    CHECK(wmr_exists(pending)); /* the device the failed attempts presented, kept for the retry */
    CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
    CHECK_END(&rec, WM_S_OK, 300, 300, 0);
    CHECK(wmr_exists(target));
    CHECK(!wmr_exists(pending)); /* installed: the store's identity file carries the device */
  }

  /* Another place is another device: the limit of one is reached. */
  REQUIRE_OK(wmr_set_str(r, WM_PROP_STORE_PATH, other));
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  CHECK_HR(wmr_end(&rec).hr, WM_E_RESTORE_FRAUD);
  CHECK(!wmr_exists(other));

  /* A refusal is not replayed to the next attempt: once the limit allows another device, the
     same place (the same pending device) is granted. */
  setenv("WMLICENSE_RESTORE_DEVICE_LIMIT", "2", 1);
  CHECK_HR(wmr_run_restore(r, &rec, WM_RESTORE_INDIVIDUALIZE), WM_S_OK);
  CHECK_END(&rec, WM_S_OK, 300, 300, 0);
  CHECK(wmr_exists(other));

  wm_backup_restorer_destroy(r);
  wmr_free(&rec);
  unsetenv("WMLICENSE_RESTORE_DEVICE_LIMIT");
  wmt_rm_rf(home);
  return wmt_finish("test_restore_retry");
}
