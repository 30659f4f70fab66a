/* stress_leaksite.c — the leak report of a block whose header was damaged must
 * not name the site its slot's previous owner left in site[].
 * usage: stress_leaksite LEVEL
 * A tracked heap hands a block out at a site, takes it back, hands the same slot
 * out again without a site (site[] keeps the old one; the header's HDR_SITE
 * flag says not to read it); a write below the block then sets that flag. The
 * report still counts the block, under no site (the header fails its keyed
 * check, so nothing in it is believed).
 */
#include "stress_common.h"

#define HDR_SITE_BYTE (-6) /* the header word is user[-8..-1]; HDR_SITE is bit 18 */
#define HDR_SITE_BIT 0x04

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s LEVEL\n", argv[0]);
        return 2;
    }
    nmm_heap_t *h = heap_with("level=%s:tracking=1:stacks=0", argv[1]);

    nmm_site_t before = nmm_site(h, "previous_owner.c", 7);
    unsigned char *first = nmm_alloc(h, 40, before);
    CHECK(first != NULL);
    CHECK_EQ(nmm_free(h, first, 0), NMM_OK);
    unsigned char *again = nmm_alloc(h, 40, 0);
    CHECK(again == first);  /* the same slot, from the thread cache */
    CHECK((again[HDR_SITE_BYTE] & HDR_SITE_BIT) == 0);
    again[HDR_SITE_BYTE] |= HDR_SITE_BIT;

    static char text[8192], json[8192];
    CHECK(nmm_leaks_report(h, 0, text, sizeof text) < sizeof text);
    CHECK(nmm_leaks_report(h, 1, json, sizeof json) < sizeof json);
    if (strstr(text, "previous_owner.c") || strstr(json, "previous_owner.c")) {
        fprintf(stderr, "the damaged block is blamed on the slot's previous site:\n%s\n", text);
        return 1;
    }
    CHECK(strstr(json, "\"live_blocks\": 1") || strstr(json, "\"live_blocks\":1"));
    again[HDR_SITE_BYTE] &= (unsigned char)~HDR_SITE_BIT;  /* repaired: freed cleanly */
    CHECK_EQ(nmm_free(h, again, 0), NMM_OK);
    printf("ok level=%s\n", argv[1]);
    nmm_heap_destroy(h);
    return 0;
}
