/* wmlicense demo: put a few licenses into the default store (one without the backup right),
   back them up, restore the backup into a new store, and print every event as it arrives. */
#include "wmlicense.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *status_name(wm_status s) {
  switch (s) {
    case WM_STATUS_BACKUPRESTORE_BEGIN: return "BEGIN";
    case WM_STATUS_BACKUPRESTORE_END: return "END";
    case WM_STATUS_BACKUPRESTORE_CONNECTING: return "CONNECTING";
    case WM_STATUS_BACKUPRESTORE_DISCONNECTING: return "DISCONNECTING";
    case WM_STATUS_ERROR_WITHURL: return "ERROR_WITHURL";
    case WM_STATUS_RESTRICTED_LICENSE: return "RESTRICTED_LICENSE";
    case WM_STATUS_BACKUPRESTORE_PROGRESS: return "PROGRESS";
    default: return "ERROR";
  }
}

/* Runs on a library worker thread, one event at a time. */
static void on_event(const wm_event *e, void *context) {
  const char *op = e->operation == WM_OPERATION_BACKUP ? "backup " : "restore";
  (void)context;
  printf("  [%s] %-18s", op, status_name(e->status));
  switch (e->status) {
    case WM_STATUS_RESTRICTED_LICENSE:
      printf(" key ID %.*s \"%s\" has no backup right: left out", (int)e->key_id_len,
             (const char *)e->key_id, e->title ? e->title : "");
      break;
    case WM_STATUS_BACKUPRESTORE_PROGRESS:
      printf(" %llu of %llu", (unsigned long long)e->processed, (unsigned long long)e->total);
      break;
    case WM_STATUS_BACKUPRESTORE_END:
      printf(" 0x%08x %s processed %llu, total %llu, skipped %llu%s%s", (unsigned)e->hr,
             WM_SUCCEEDED(e->hr) ? "ok:" : "FAILED:", (unsigned long long)e->processed,
             (unsigned long long)e->total, (unsigned long long)e->skipped, e->message ? "\n      " : "",
             e->message ? e->message : "");
      break;
    default:
      break;
  }
  printf("\n");
  fflush(stdout);
}

static int32_t print_license(const wm_license *l, void *ctx) {
  (void)ctx;
  printf("  %-20.*s %-16s rights 0x%03x  plays %d\n", (int)l->key_id_len, (const char *)l->key_id,
         l->title ? l->title : "(untitled)", l->rights, l->play_count);
  return 0;
}

static int fail(const char *what, wm_hresult hr) {
  fprintf(stderr, "%s failed: 0x%08x %s\n  %s\n", what, (unsigned)hr, wm_hresult_message(hr),
          wm_last_error_message());
  return 1;
}

#define TRY(call)                          \
  do {                                     \
    wm_hresult hr_ = (call);               \
    if (WM_FAILED(hr_)) return fail(#call, hr_); \
  } while (0)

static int list_store(const char *path, const char *label) {
  wm_license_store *store = NULL;
  uint64_t count = 0;
  TRY(wm_license_store_open(path, &store));
  TRY(wm_license_store_count(store, &count));
  printf("%s holds %llu licenses:\n", label, (unsigned long long)count);
  TRY(wm_license_store_for_each(store, print_license, NULL));
  wm_license_store_close(store);
  return 0;
}

int main(void) {
  static const struct { const char *kid, *key, *title; uint32_t rights; int32_t plays; } songs[] = {
    {"kid-blue-in-green", "content-key-0001", "Blue in Green", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, -1},
    {"kid-so-what", "content-key-0002", "So What", WM_RIGHT_PLAYBACK | WM_RIGHT_COPY_TO_CD | WM_RIGHT_BACKUP, 10},
    {"kid-freddie", "content-key-0003", "Freddie Freeloader", WM_RIGHT_PLAYBACK | WM_RIGHT_BACKUP, 5},
    {"kid-all-blues", "content-key-0004", "All Blues", WM_RIGHT_PLAYBACK, 3},
  };
  const char *home = getenv("WMLICENSE_HOME");
  char backup_dir[1024], restored[1024];
  wm_license_store *store = NULL;
  wm_backup_restorer *r = NULL;
  size_t i;

  if (!home || !*home) {
    fprintf(stderr, "set WMLICENSE_HOME to a scratch directory (scripts/demo.sh does)\n");
    return 2;
  }
  snprintf(backup_dir, sizeof backup_dir, "%s/backup", home);
  snprintf(restored, sizeof restored, "%s/restored-store", home);
  printf("wmlicense %s\n", wm_version());

  TRY(wm_license_store_open(NULL, &store)); /* the default store: $WMLICENSE_HOME */
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
    TRY(wm_license_store_put(store, &l));
  }
  wm_license_store_close(store);
  if (list_store(NULL, "default store")) return 1;

  TRY(wm_backup_restorer_create(on_event, NULL, &r));
  printf("\nbackup of the default store to %s/licenses.wmlb:\n", backup_dir);
  TRY(wm_backup_restorer_set_prop(r, WM_PROP_BACKUP_PATH, WM_TYPE_STRING, (const uint8_t *)backup_dir,
                                  (uint32_t)strlen(backup_dir)));
  TRY(wm_backup_restorer_backup(r, WM_BACKUP_OVERWRITE));
  TRY(wm_backup_restorer_wait(r, WM_INFINITE));

  printf("\nrestore into a new store at %s (embedded License Management Service):\n", restored);
  TRY(wm_backup_restorer_set_prop(r, WM_PROP_RESTORE_PATH, WM_TYPE_STRING, (const uint8_t *)backup_dir,
                                  (uint32_t)strlen(backup_dir)));
  TRY(wm_backup_restorer_set_prop(r, WM_PROP_STORE_PATH, WM_TYPE_STRING, (const uint8_t *)restored,
                                  (uint32_t)strlen(restored)));
  TRY(wm_backup_restorer_restore(r, WM_RESTORE_INDIVIDUALIZE));
  TRY(wm_backup_restorer_wait(r, WM_INFINITE));
  wm_backup_restorer_destroy(r);

  printf("\n");
  return list_store(restored, "restored store");
}
