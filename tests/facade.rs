//! What a user writes, through the `rodario` facade: `#[rodario::actor]` on their own
//! types, `Node::memory()`, typed proxies and clusters.

use std::time::Duration;

use rodario::memory::MemoryBroker;
use rodario::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Point {
    x: i64,
    y: i64,
}

#[derive(Debug)]
struct OutOfBounds(i64);

impl std::fmt::Display for OutOfBounds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is out of bounds", self.0)
    }
}

#[derive(Default)]
struct Plotter {
    points: Vec<Point>,
}

#[rodario::actor]
impl Plotter {
    /// Stores a point; refuses negative coordinates.
    pub async fn plot(&mut self, point: Point) -> Result<usize, OutOfBounds> {
        if point.x < 0 {
            return Err(OutOfBounds(point.x));
        }
        self.points.push(point);
        Ok(self.points.len())
    }

    /// A synchronous method with several parameters and a struct result.
    pub fn shifted(&self, index: usize, dx: i64, dy: i64) -> Option<Point> {
        self.points.get(index).map(|p| Point {
            x: p.x + dx,
            y: p.y + dy,
        })
    }

    /// No parameters, no result.
    pub fn clear(&mut self) {
        self.points.clear();
    }

    /// Not public: not part of the actor's interface.
    #[allow(dead_code)]
    fn secret(&self) -> usize {
        42
    }
}

#[tokio::test]
async fn typed_proxies_carry_structs_results_and_errors() {
    let node = Node::memory();
    let plotter = node.spawn(Plotter::default()).start().await.unwrap();
    let proxy = plotter.proxy();
    let point = Point { x: 1, y: 2 };
    assert_eq!(proxy.plot(point.clone()).await.unwrap().await.unwrap(), 1);
    let refused = proxy.plot(Point { x: -5, y: 0 }).await.unwrap().await;
    match refused {
        Err(Error::Remote { message, .. }) => assert_eq!(message, "-5 is out of bounds"),
        other => panic!("expected a remote error, got {other:?}"),
    }
    let shifted = proxy.shifted(0, 10, 20).await.unwrap().await.unwrap();
    assert_eq!(shifted, Some(Point { x: 11, y: 22 }));
    proxy.clear().await.unwrap().await.unwrap();
    assert_eq!(proxy.shifted(0, 0, 0).await.unwrap().await.unwrap(), None);
}

#[tokio::test]
async fn private_methods_are_not_served() {
    let node = Node::memory();
    let plotter = node
        .spawn(Plotter::default())
        .uuid("plotter")
        .start()
        .await
        .unwrap();
    let untyped: ActorProxy = node.registry().get_proxy("plotter").await.unwrap();
    let mut methods = untyped.methods().to_vec();
    methods.sort();
    assert_eq!(methods, vec!["clear", "plot", "shifted"]);
    let secret = untyped.call::<usize>("secret", ()).await.unwrap().await;
    assert!(
        matches!(secret, Err(Error::UnknownMethod { .. })),
        "{secret:?}"
    );
    plotter.stop().await;
}

#[tokio::test]
async fn nodes_on_one_memory_broker_see_each_other_and_others_do_not() {
    let broker = MemoryBroker::new();
    let host = Node::new(broker.backend());
    let caller = Node::new(broker.backend());
    let stranger = Node::memory();
    let _plotter = host
        .spawn(Plotter::default())
        .uuid("shared")
        .start()
        .await
        .unwrap();
    let proxy: PlotterProxy = caller.registry().get_proxy("shared").await.unwrap();
    let reply = proxy.plot(Point { x: 0, y: 0 }).await.unwrap();
    assert_eq!(reply.get(Duration::from_secs(1)).await.unwrap(), 1);
    let missing = stranger
        .registry()
        .get_proxy::<PlotterProxy>("shared")
        .await;
    assert!(
        matches!(missing, Err(Error::InvalidActor { .. })),
        "{missing:?}"
    );
}
