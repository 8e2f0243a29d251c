// SPDX-License-Identifier: GPL-2.0

#include <linux/memfd.h>
#include <linux/mm.h>

/*
 * memfd_get_seals() is not exported to modules; a driver that keeps a memfd's
 * pages for a device needs to know that F_SEAL_SHRINK keeps them in place.
 */
__rust_helper int rust_helper_memfd_file_seals(struct file *file)
{
	return memfd_get_seals(file);
}

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
