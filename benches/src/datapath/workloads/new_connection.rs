//! A new client connection for every request: what `Connection: close` clients, scripts and
//! health checkers cost a proxy (accept, a connection's state, its first read).

use super::super::dial::Dial;
use super::super::{Error, load};
use super::Exchange;

/// Connects, sends one `GET /`, reads the whole response, and closes.
pub(crate) struct NewConnection;

impl Exchange for NewConnection {
    type Conn = ();

    async fn connect(&self, _dial: &Dial) -> Result<(), Error> {
        Ok(())
    }

    async fn once(&self, dial: &Dial, _conn: &mut ()) -> Result<u64, Error> {
        let mut send = load::connect(dial).await?;
        match load::request(&mut send, dial.authority).await? {
            // Dropping the sender closes the connection, from the client's side.
            true => Ok(super::super::BODY.len() as u64),
            false => Err(Error::Status),
        }
    }
}
