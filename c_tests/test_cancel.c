/* Cancelling a large backup and a large restore (SPEC §4 "Cancel", "Backup writes ...
   atomically", "Restore changes the store in one transaction").

   A store of 200,000 licenses (5,000 with WMLICENSE_TEST_QUICK) is backed up completely (A).
   Then an overwriting backup into the same directory is cancelled while it streams: END carries
   WM_E_OPERATION_CANCELED with processed < total, it is the one and last event, A is still there
   byte for byte and no temporary file is left. Then a restore of A into a store with 3 licenses
   of its own is cancelled once the service has granted it: the store is exactly as before. A
   full restore afterwards works (the store is usable after a cancel). The time from the cancel
   call to END is printed, not asserted.

   Whatever the engine's speed, each cancel lands while the operation runs: the operation is held
   at a known point (wms_hold_at) until the cancel is in. The backup is held in the callback of
   the RESTRICTED_LICENSE of the one license in the middle of the store that has lost its backup
   right (the temporary file is half written then), the restore in the callback of
   DISCONNECTING. */
#include "stress_util.h"

#define OWN_FIRST 90000000u /* key IDs of the target store's own licenses */

static void phase(const char *what, double since) {
  printf("  %-44s %8.0f ms\n", what, wms_now_ms() - since);
  fflush(stdout);
}

int main(void) {
  const unsigned n = wms_quick() ? 5000u : 200000u;
  char home[512], src[600], dir[600], target[600], file[700];
  wms_recorder rec;
  wm_backup_restorer *r = NULL;
  uint8_t *backup_a = NULL, *after = NULL;
  size_t backup_a_len = 0, after_len = 0;
  double t, t_all = wms_now_ms(), cancel_at;
  wms_event end;
  wms_dump_t before, now;
  int entries, unexpected, running;

  wms_fresh_home(home, sizeof home, "cancel");
  snprintf(src, sizeof src, "%s/source-store", home);
  snprintf(dir, sizeof dir, "%s/backup-D", home);
  snprintf(target, sizeof target, "%s/target-store", home);
  snprintf(file, sizeof file, "%s/licenses.wmlb", dir);
  printf("test_cancel: %u licenses\n", n);

  t = wms_now_ms();
  wms_fill_store(src, 0, n, WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 0, 0);
  phase("fill the source store", t);

  wms_recorder_init(&rec);
  REQUIRE_OK(wm_backup_restorer_create(wms_record, &rec, &r));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_STORE_PATH, src));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_BACKUP_PATH, dir));
  REQUIRE_OK(wms_set_prop(r, WM_PROP_RESTORE_PATH, dir));

  /* ---- backup A, complete */
  t = wms_now_ms();
  CHECK_HR(wm_backup_restorer_backup(r, 0), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
  phase("complete backup A", t);
  end = wms_last_end(&rec);
  CHECK_HR(end.hr, WM_S_OK);
  CHECK(end.processed == n && end.total == n && end.skipped == 0);
  wms_check_shape(&rec, WM_OPERATION_BACKUP, "backup A");
  backup_a = wms_read_file(file, &backup_a_len);
  if (!backup_a || backup_a_len <= 176) {
    fprintf(stderr, "backup A is missing or too short (%zu bytes)\n", backup_a_len);
    return 1;
  }
  printf("  backup A: %zu bytes\n", backup_a_len);

  /* ---- cancelled overwriting backup, held in the middle of its stream */
  wms_fill_store(src, n / 2, 1, WM_RIGHT_PLAYBACK, 0, 0);
  wms_recorder_reset(&rec);
  wms_hold_at(&rec, WM_STATUS_RESTRICTED_LICENSE);
  t = wms_now_ms();
  CHECK_HR(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE), WM_S_OK);
  running = wms_wait_held(&rec, 60000);
  CHECK(running);
  /* Nothing to do for the other kind of operation. */
  CHECK_HR(wm_backup_restorer_cancel_restore(r), WM_S_FALSE);
  cancel_at = wms_now_ms();
  CHECK_HR(wm_backup_restorer_cancel_backup(r), WM_S_OK);
  wms_release(&rec);
  if (!wms_wait_ends(&rec, 1, 60000)) {
    fprintf(stderr, "the cancelled backup sent no END within 60 s\n");
    wms_dump_events(&rec, "cancelled backup");
    _exit(1);
  }
  end = wms_last_end(&rec);
  printf("  backup cancel -> END: %.1f ms (cancelled at %.0f ms after the start)\n",
         end.at_ms - cancel_at, cancel_at - t);
  CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
  wms_sleep_ms(150); /* nothing may follow END */
  CHECK_HR(end.hr, WM_E_OPERATION_CANCELED);
  CHECK(end.processed < end.total);
  CHECK(end.total == n);
  CHECK(end.message[0] != '\0');
  wms_check_shape(&rec, WM_OPERATION_BACKUP, "cancelled backup");
  CHECK_HR(wm_backup_restorer_cancel_backup(r), WM_S_FALSE); /* nothing runs any more */
  CHECK_HR(wm_backup_restorer_wait(r, 0), WM_S_OK);
  /* The previous backup is untouched and nothing else that looks like a backup is there. */
  after = wms_read_file(file, &after_len);
  CHECK(after != NULL);
  CHECK(after_len == backup_a_len && after && memcmp(after, backup_a, backup_a_len) == 0);
  free(after);
  after = NULL;
  entries = wms_list_dir(dir, "licenses.wmlb", &unexpected);
  CHECK(entries >= 1);
  CHECK(unexpected == 0);

  /* ---- cancelled restore into a store with licenses of its own */
  wms_fill_store(target, OWN_FIRST, 3, WM_RIGHT_PLAYBACK, 32, 5);
  before = wms_dump_store(target);
  CHECK(before.count == 3);
  REQUIRE_OK(wms_set_prop(r, WM_PROP_STORE_PATH, target));
  wms_recorder_reset(&rec);
  t = wms_now_ms();
  wms_hold_at(&rec, WM_STATUS_BACKUPRESTORE_DISCONNECTING);
  CHECK_HR(wm_backup_restorer_restore(r, 0), WM_S_OK);
  running = wms_wait_held(&rec, 60000);
  CHECK(running);
  CHECK_HR(wm_backup_restorer_cancel_backup(r), WM_S_FALSE);
  cancel_at = wms_now_ms();
  CHECK_HR(wm_backup_restorer_cancel_restore(r), WM_S_OK);
  wms_release(&rec);
  if (!wms_wait_ends(&rec, 1, 60000)) {
    fprintf(stderr, "the cancelled restore sent no END within 60 s\n");
    wms_dump_events(&rec, "cancelled restore");
    _exit(1);
  }
  end = wms_last_end(&rec);
  printf("  restore cancel -> END: %.1f ms (cancelled at %.0f ms after the start)\n",
         end.at_ms - cancel_at, cancel_at - t);
  CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
  wms_sleep_ms(150);
  CHECK_HR(end.hr, WM_E_OPERATION_CANCELED);
  CHECK(end.processed == 0); /* cancelled before the first license was imported */
  wms_check_shape(&rec, WM_OPERATION_RESTORE, "cancelled restore");
  {
    wms_event evs[4];
    size_t k = wms_snapshot(&rec, evs, 4);
    CHECK(k >= 3 && evs[1].status == WM_STATUS_BACKUPRESTORE_CONNECTING &&
          evs[2].status == WM_STATUS_BACKUPRESTORE_DISCONNECTING);
  }
  CHECK_HR(wm_backup_restorer_cancel_restore(r), WM_S_FALSE);
  now = wms_dump_store(target);
  CHECK(now.count == before.count);
  CHECK(now.sum == before.sum);

  /* ---- the store is usable: a full restore works */
  wms_recorder_reset(&rec);
  t = wms_now_ms();
  CHECK_HR(wm_backup_restorer_restore(r, 0), WM_S_OK);
  CHECK_HR(wm_backup_restorer_wait(r, WM_INFINITE), WM_S_OK);
  phase("full restore of A after the cancel", t);
  end = wms_last_end(&rec);
  CHECK_HR(end.hr, WM_S_OK);
  CHECK(end.processed == n && end.total == n && end.skipped == 0);
  wms_check_shape(&rec, WM_OPERATION_RESTORE, "full restore");
  CHECK(wms_store_count(target) == (uint64_t)n + 3);

  wm_backup_restorer_destroy(r);
  wms_recorder_free(&rec);
  free(backup_a);
  wmt_rm_rf(home);
  phase("test_cancel total", t_all);
  return wmt_finish("test_cancel");
}
