// SPDX-License-Identifier: GPL-2.0

#include <linux/memfd.h>
#include <linux/mm.h>

__rust_helper struct page *rust_helper_folio_page(struct folio *folio,
						  unsigned long n)
{
	return folio_page(folio, n);
}

__rust_helper size_t rust_helper_folio_size(const struct folio *folio)
{
	return folio_size(folio);
}

__rust_helper unsigned long rust_helper_folio_pfn(const struct folio *folio)
{
	return folio_pfn(folio);
}

__rust_helper bool rust_helper_folio_test_dirty(const struct folio *folio)
{
	return folio_test_dirty(folio);
}
