//! Following a paginated list to its end, where the server says it ends.
//!
//! DoorFlow lists take `page` (from 1) and `per_page`, and answer with a bare JSON array and,
//! per the spec, `Total` and `Per-Page` headers (older documents: `X-Total-Results`,
//! `X-Per-Page`). A server may send fewer items than `per_page` asked for (a cap the spec does
//! not forbid), so a short page alone does not end a list:
//!
//! - **With a total**, the list ends once that many items arrived — without asking for an empty
//!   page after them. A page shorter than asked while the total says more is the server's page
//!   size: the next pages are asked with it, so page numbers and offsets agree whatever size the
//!   server counts in. An empty page before the total is reached, or pages that cannot be
//!   followed, fail the pull ([`PagingError`]): the caller keeps its previous snapshot.
//! - **Without one**, an empty page ends the list, and so does a page shorter than an earlier
//!   one. A first page shorter than asked may be the whole list or a capped page: the next page
//!   (asked with that size) tells, at the cost of one request.
//!
//! With `skip_pagination=true` a server may answer with the whole list at once; one that
//! ignores it answers with a first page, and paging goes on from there.
//!
//! Pure: the caller sends the requests and reports what each answer held.

use reqwest::header::HeaderMap;

/// What an answer's headers said about the list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageTotals {
    /// Items in the whole list (`Total` or `X-Total-Results`).
    pub total: Option<u64>,
    /// Items per page as the server counts them (`Per-Page` or `X-Per-Page`).
    pub per_page: Option<u64>,
}

impl PageTotals {
    /// Reads `Total`/`Per-Page`, else `X-Total-Results`/`X-Per-Page`; malformed values are
    /// ignored.
    pub fn from_headers(headers: &HeaderMap) -> PageTotals {
        let number = |names: [&str; 2]| {
            names.iter().find_map(|name| {
                headers
                    .get(*name)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
            })
        };
        PageTotals {
            total: number(["total", "x-total-results"]),
            per_page: number(["per-page", "x-per-page"]).filter(|n| *n > 0),
        }
    }
}

/// The next request, or the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Page { page: u64, per_page: u64 },
    Done,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PagingError {
    #[error("the server said {total} items but sent an empty page after {received}")]
    EndedEarly { received: u64, total: u64 },
    #[error("pages of uneven length ({received} items received, then a page of {page}): the list cannot be followed")]
    Uneven { received: u64, page: u64 },
}

/// Where a list pull is: what to ask next, what arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pager {
    page: u64,
    per_page: u64,
    received: u64,
    pages: u64,
    longest: u64,
    total: Option<u64>,
    done: bool,
}

impl Pager {
    /// A pull asking for `per_page` items a page.
    pub fn new(per_page: u64) -> Pager {
        Pager {
            page: 1,
            per_page: per_page.max(1),
            received: 0,
            pages: 0,
            longest: 0,
            total: None,
            done: false,
        }
    }

    /// The request to send now (page numbers from 1).
    pub fn next(&self) -> Next {
        if self.done {
            Next::Done
        } else {
            Next::Page {
                page: self.page,
                per_page: self.per_page,
            }
        }
    }

    /// Items received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The list's size as the server last said it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// Answers received so far.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Requests still to send, when the server's total says.
    pub fn pages_left(&self) -> Option<u64> {
        if self.done {
            return Some(0);
        }
        let left = self.total?.saturating_sub(self.received);
        Some(left.div_ceil(self.per_page).max(u64::from(self.pages == 0)))
    }

    /// Takes in an answer of `items` items with `totals`, and says what comes next.
    pub fn answered(&mut self, items: u64, totals: PageTotals) -> Result<Next, PagingError> {
        let asked = self.per_page;
        self.received += items;
        self.pages += 1;
        if totals.total.is_some() {
            self.total = totals.total;
        }
        let longest = self.longest;
        self.longest = longest.max(items);
        let size = match self.total {
            Some(total) if self.received >= total => return Ok(self.finish()),
            Some(total) if items == 0 => {
                return Err(PagingError::EndedEarly {
                    received: self.received,
                    total,
                })
            }
            // More to come: the server's page size is what it says, or what it sent.
            Some(_) => totals.per_page.unwrap_or(items).min(items.max(1)).max(1),
            None if items == 0 || items < longest => return Ok(self.finish()),
            // Everything at once (skip_pagination honoured).
            None if items > asked => return Ok(self.finish()),
            None => items,
        };
        if self.received % size != 0 {
            return Err(PagingError::Uneven {
                received: self.received,
                page: items,
            });
        }
        self.per_page = size;
        self.page = self.received / size + 1;
        Ok(self.next())
    }

    fn finish(&mut self) -> Next {
        self.done = true;
        Next::Done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// Serves `list` items the way a server with `cap` items a page, and totals or not, would;
    /// returns the requests made and what arrived.
    fn follow(list: u64, asked: u64, cap: u64, totals: bool) -> (Vec<(u64, u64)>, Result<u64, PagingError>) {
        let mut pager = Pager::new(asked);
        let mut requests = Vec::new();
        loop {
            let Next::Page { page, per_page } = pager.next() else {
                return (requests, Ok(pager.received()));
            };
            requests.push((page, per_page));
            let size = per_page.min(cap);
            let start = (page - 1) * size;
            let items = list.saturating_sub(start).min(size);
            let said = PageTotals {
                total: totals.then_some(list),
                per_page: totals.then_some(size),
            };
            if let Err(error) = pager.answered(items, said) {
                return (requests, Err(error));
            }
            assert!(requests.len() < 1000, "runaway");
        }
    }

    #[test]
    fn with_totals_the_list_ends_at_the_total_without_an_empty_page() {
        let (requests, received) = follow(2000, 100, 100, true);
        assert_eq!(received, Ok(2000));
        assert_eq!(requests.len(), 20, "20 pages, not 21");
        let (requests, received) = follow(0, 500, 500, true);
        assert_eq!((requests.len(), received), (1, Ok(0)));
        let (requests, received) = follow(37, 500, 500, true);
        assert_eq!((requests.len(), received), (1, Ok(37)));
    }

    /// The independent server that capped pages at 100 when 500 were asked: a short page is
    /// not the end while the total says more.
    #[test]
    fn a_server_capping_pages_is_followed_to_the_end() {
        let (requests, received) = follow(390, 500, 100, true);
        assert_eq!(received, Ok(390));
        assert_eq!(requests, [(1, 500), (2, 100), (3, 100), (4, 100)]);
    }

    #[test]
    fn without_totals_a_short_first_page_is_confirmed_by_one_more_request() {
        let (requests, received) = follow(390, 500, 100, false);
        assert_eq!(received, Ok(390));
        assert_eq!(requests, [(1, 500), (2, 100), (3, 100), (4, 100)]);
        // A list that really was shorter than a page: one request more than with totals.
        let (requests, received) = follow(37, 500, 500, false);
        assert_eq!((requests.len(), received), (2, Ok(37)));
        // Exact multiples need the empty page without totals.
        let (requests, received) = follow(1000, 500, 500, false);
        assert_eq!((requests.len(), received), (3, Ok(1000)));
    }

    #[test]
    fn an_empty_page_before_the_total_fails() {
        let mut pager = Pager::new(100);
        let said = |total| PageTotals {
            total: Some(total),
            per_page: None,
        };
        assert_eq!(
            pager.answered(100, said(390)),
            Ok(Next::Page {
                page: 2,
                per_page: 100
            })
        );
        assert_eq!(
            pager.answered(0, said(390)),
            Err(PagingError::EndedEarly {
                received: 100,
                total: 390
            })
        );
    }

    #[test]
    fn pages_that_cannot_be_followed_fail() {
        let mut pager = Pager::new(100);
        let said = PageTotals {
            total: Some(390),
            per_page: None,
        };
        pager.answered(100, said).unwrap();
        assert!(matches!(
            pager.answered(70, said),
            Err(PagingError::Uneven { .. })
        ));
    }

    #[test]
    fn the_whole_list_at_once_ends_it_and_an_ignored_skip_pagination_pages_on() {
        let mut pager = Pager::new(500);
        let all = PageTotals {
            total: Some(130_000),
            per_page: None,
        };
        assert_eq!(pager.answered(130_000, all), Ok(Next::Done));
        let mut pager = Pager::new(500);
        assert_eq!(pager.answered(1234, PageTotals::default()), Ok(Next::Done));
        let mut pager = Pager::new(500);
        assert_eq!(
            pager.answered(500, all),
            Ok(Next::Page {
                page: 2,
                per_page: 500
            })
        );
        assert_eq!(pager.pages_left(), Some(259));
    }

    #[test]
    fn pages_left_follow_the_total() {
        let mut pager = Pager::new(100);
        assert_eq!(pager.pages_left(), None);
        let said = PageTotals {
            total: Some(250),
            per_page: Some(100),
        };
        pager.answered(100, said).unwrap();
        assert_eq!(pager.pages_left(), Some(2));
        pager.answered(100, said).unwrap();
        pager.answered(50, said).unwrap();
        assert_eq!(pager.pages_left(), Some(0));
    }

    #[test]
    fn totals_in_both_header_styles() {
        let mut headers = HeaderMap::new();
        headers.insert("X-Total-Results", HeaderValue::from_static("1050"));
        headers.insert("X-Per-Page", HeaderValue::from_static("50"));
        assert_eq!(
            PageTotals::from_headers(&headers),
            PageTotals {
                total: Some(1050),
                per_page: Some(50)
            }
        );
        headers.insert("Total", HeaderValue::from_static("1051"));
        headers.insert("Per-Page", HeaderValue::from_static("lots"));
        assert_eq!(
            PageTotals::from_headers(&headers),
            PageTotals {
                total: Some(1051),
                per_page: Some(50)
            }
        );
    }
}
